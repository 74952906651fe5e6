"""The hydra config tree of vptbench, the folder users edit: `config.yaml` and one folder per config group.

It ships inside the package as `bench.ablations` (pyproject.toml maps this folder there), so an installed
vptbench finds its configs wherever it runs; an editable install maps the name back to this folder.
"""
