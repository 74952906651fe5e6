"""`vptbench compare --rev BASE [HEAD] OVERRIDES`: two revisions of a temporary clone, A/B in one run.

The clone gets two commits beside its base: one that makes every block do wasted work (several times a
block's output run through tanh, discarded: same outputs, same Linear FLOPs, a much slower forward) and
one that widens the tiny preset (params and FLOPs change). Each revision is measured from its own
worktree: if the workers imported this checkout instead, the slow commit would not be slower.
"""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CELL = ["backbone=mixste", "preset=tiny", "metrics=[params,flops,speed]", "speed.batch_size=4"]
ANCHOR = "        x = x + self.drop_path(self.mlp(self.norm2(x)))\n"


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@localhost", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    repo = tmp_path_factory.mktemp("ab") / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(repo)], check=True)
    revs = {"base": _git(repo, "rev-parse", "HEAD")}
    layers = repo / "backbones" / "layers.py"
    text = layers.read_text()
    assert text.count(ANCHOR) == 1
    layers.write_text(text.replace(ANCHOR, ANCHOR + "        for _ in range(12):\n            torch.tanh(x)\n"))
    _git(repo, "commit", "-qam", "slower: wasted work in every block")
    revs["slow"] = _git(repo, "rev-parse", "HEAD")
    _git(repo, "checkout", "-q", revs["base"])
    mixste = repo / "backbones" / "mixste.py"
    tiny = 'MixSTEConfig(num_frames=27, embed_dim=32,'
    assert tiny in mixste.read_text()
    mixste.write_text(mixste.read_text().replace(tiny, 'MixSTEConfig(num_frames=27, embed_dim=48,'))
    _git(repo, "commit", "-qam", "wider tiny preset")
    revs["wider"] = _git(repo, "rev-parse", "HEAD")
    _git(repo, "checkout", "-q", revs["base"])
    return repo, revs


def _ab(repo, *args):
    # run inside the clone (its git history is what --rev reads), with this checkout's driver: `python -m`
    # there would import the clone's own, older bench
    driver = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from bench.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", driver, "compare", *args], cwd=repo, capture_output=True,
                          text=True, timeout=600)


def test_a_slower_revision_is_a_speed_regression(clone):
    repo, revs = clone
    done = _ab(repo, "--rev", revs["base"], revs["slow"], *CELL, "--budget", "8")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "REGRESSED mixste[tiny] none+none - frames_per_s" in done.stderr
    table = done.stdout
    assert "| mixste[tiny] none+none - | gflops | " in table and "must match (rel 1e-9) | ok |" in table
    assert "| REGRESSED |" in table and "signed-rank interval" in table
    assert not list(Path(repo).parent.glob("vptbench-ab-*")) and "clone" in _git(repo, "worktree", "list")
    assert len(_git(repo, "worktree", "list").splitlines()) == 1  # the worktrees are removed after the run


def test_the_same_revision_is_no_regression(clone):
    repo, revs = clone
    done = _ab(repo, "--rev", revs["base"], *CELL, "--budget", "5")  # HEAD: the clone's working tree
    assert done.returncode == 0, done.stdout + done.stderr
    assert "REGRESSED" not in done.stdout + done.stderr
    assert "against BASE" in done.stdout and "working tree" in done.stdout


def test_a_model_change_fails_params_and_flops(clone):
    repo, revs = clone
    done = _ab(repo, "--rev", revs["base"], revs["wider"], "backbone=mixste", "preset=tiny", "metrics=[params,flops]")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "REGRESSED mixste[tiny] none+none - params_m" in done.stderr
    assert "REGRESSED mixste[tiny] none+none - gflops" in done.stderr


@pytest.mark.parametrize("args, message", [
    (["--rev", "no-such-branch", "backbone=mixste"], "--rev 'no-such-branch' is not a commit"),
    (["--rev", "HEAD"], "needs the cells' overrides"),
    (["--rev", "HEAD", "backbone=nosuch"], "nosuch"),
    (["--rev", "HEAD", "HEAD~1", "HEAD~2", "backbone=mixste"], "takes one HEAD revision"),
])
def test_bad_input_is_one_line_before_anything_runs(clone, args, message):
    repo, _ = clone
    done = _ab(repo, *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def _project(root, deps):
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(f'[project]\nname = "x"\nversion = "0"\ndependencies = {deps!r}\n')
    return root


def test_a_revision_with_other_dependencies_gets_its_own_cached_environment(tmp_path):
    from bench.ab import environment_for

    ours = _project(tmp_path / "ours", ["numpy"])
    same = _project(tmp_path / "same", ["numpy"])
    other = _project(tmp_path / "other", [])
    assert environment_for(same, ours, cache=tmp_path / "cache") == (sys.executable, "")
    python, note = environment_for(other, ours, cache=tmp_path / "cache")
    assert python != sys.executable and Path(python).is_file() and "dependencies differ" in note
    check = subprocess.run([python, "-c", "import importlib.util as u; print(u.find_spec('numpy') is None)"],
                           capture_output=True, text=True, check=True)
    assert check.stdout.strip() == "True"  # exactly the revision's dependencies: not ours
    stamp = (Path(python).parents[1] / "complete").stat().st_mtime_ns
    assert environment_for(other, ours, cache=tmp_path / "cache")[0] == python  # cached, not rebuilt
    assert (Path(python).parents[1] / "complete").stat().st_mtime_ns == stamp
