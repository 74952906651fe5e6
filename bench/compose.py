"""The command line of `vptbench run`, composed and checked before anything runs.

`compose_cells` turns overrides into the validated `Config` of every cell of the grid, the way hydra
will launch them (hydra's own sweep expansion, the experiment's grid first so the command line wins),
and checks what hydra would only find late or with a traceback: group options that are paths or do
not exist, config keys the schema lacks, launcher settings that cannot start, more parallel GPU
workers than GPUs. Every problem is a `UserError`: one line, exit 2. `pin_device` resolves
`device=auto` once, for the grid and its jobs alike.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import List

__all__ = ["ABLATIONS", "UserError", "compose_cells", "pin_device", "launcher_name", "register_resolvers",
           "one_line", "group_options"]


def _config_tree() -> Path:
    """The hydra config tree: the checkout's `ablations/` folder, which an install ships as `bench.ablations`
    (an editable install maps that name back to the folder, so edits there take effect)."""
    try:
        from . import ablations
    except ImportError:  # a source checkout run without installing it
        return Path(__file__).resolve().parent.parent / "ablations"
    return Path(ablations.__file__).resolve().parent


ABLATIONS = _config_tree()


class UserError(Exception):
    """A bad command line or config: printed as one line, exit code 2."""


def one_line(e: BaseException) -> str:
    """One line from a hydra or omegaconf exception, built from their structure rather than by parsing
    their wording: the message (omegaconf's bare `msg`, without its object_type / full_key lines) and the
    message of its cause, then the config key omegaconf names (`full_key`)."""
    from omegaconf.errors import OmegaConfBaseException

    parts, key = [], ""
    for err in (e, e.__cause__):
        if err is None:
            continue
        if isinstance(err, OmegaConfBaseException):
            key = key or getattr(err, "full_key", "") or ""
            lines = (getattr(err, "msg", None) or str(err)).strip().splitlines()[:1]
        else:  # hydra's: what failed, then (on a second line) how to fix it, e.g. "use +foo=1"
            lines = str(err).strip().splitlines()[:2]
        parts += [line.strip() for line in lines if line.strip()]
    text = "; ".join(dict.fromkeys(parts)) or type(e).__name__
    return f"{text} (key: {key})" if key and key not in text else text


def _by_preset(preset: str, table):
    """`${by_preset:${preset.name},{paper: X, tiny: Y}}`: a value that depends on the preset."""
    if preset not in table:
        raise ValueError(f"this config has no value for preset '{preset}'; valid presets here: {', '.join(table)}")
    return table[preset]


# config groups whose options may also come from code: a strategy registered in a registry, or a preset
# a backbone family declares, is an option by its name without a YAML file of its own (a file is only
# needed to document it or give its options defaults)
REGISTERED_GROUPS = ("pruner", "recoverer", "preset")


def _registered(group: str) -> List[str]:
    if group not in REGISTERED_GROUPS:
        return []
    import backbones
    from backbones import hourglass

    if group == "preset":
        return sorted({p for b in backbones.list_backbones() for p in backbones.list_presets(b)})
    return (hourglass.PRUNERS if group == "pruner" else hourglass.RECOVERERS).names()


def group_options(group: str) -> List[str]:
    """The options of a config group: its YAML files in ablations/, the registered strategies and the presets."""
    return sorted({p.stem for p in (ABLATIONS / group).glob("*.yaml")} | set(_registered(group)))


def _store_registered_options() -> None:
    """Registered strategies and declared presets without a YAML file become group options of their name."""
    from hydra.core.config_store import ConfigStore

    from .config import PresetCfg, PrunerCfg, RecovererCfg

    nodes = {"pruner": PrunerCfg, "recoverer": RecovererCfg, "preset": PresetCfg}
    for group in REGISTERED_GROUPS:
        for name in _registered(group):
            if not (ABLATIONS / group / f"{name}.yaml").exists():
                ConfigStore.instance().store(group=group, name=name, node=nodes[group](name=name))


def register_resolvers() -> None:
    from omegaconf import OmegaConf

    from .config import register_configs

    register_configs()
    _store_registered_options()
    OmegaConf.register_new_resolver("by_preset", _by_preset, replace=True)


def _check_keys(node, schema, path: str = "") -> None:
    """Reject keys the structured config does not declare (`+foo=1` adds them silently otherwise)."""
    import typing
    from dataclasses import is_dataclass

    from omegaconf import DictConfig

    hints = typing.get_type_hints(schema)
    for key in node.keys():
        if key not in hints:
            raise UserError(f"unknown config key '{path}{key}'; valid keys{' under ' + path[:-1] if path else ''}: "
                            f"{', '.join(hints)} (architecture options go under backbone.overrides.*, pruner and "
                            "recoverer options under pruner.args.* / recoverer.args.*)")
        child = node._get_node(key)
        if is_dataclass(hints[key]) and isinstance(child, DictConfig):
            _check_keys(child, hints[key], f"{path}{key}.")


def compose_cells(overrides: List[str], multirun: bool) -> list:
    """Compose and validate every cell the command line describes; returns their `Config`s."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # hydra-core is pinned (1.3.8)
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from .config import Config

    register_resolvers()
    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except Exception as e:  # hydra's OverrideParseException
        raise UserError(one_line(e)) from None
    _check_group_values(parsed, parser)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    swept = [o.get_key_element() for o in parsed if o.is_sweep_override()]
    if swept and not multirun:
        raise UserError(f"{', '.join(swept)} sweep(s) several values; add -m to run a grid")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(ABLATIONS), version_base="1.3"):
            args = list(overrides)
            if multirun:  # the experiment's own grid (hydra.sweeper.params) first, so the command line wins
                base = compose("config", overrides=fixed, return_hydra_config=True)
                _check_launcher(base.hydra.launcher)
                params = OmegaConf.to_container(base.hydra.sweeper.params, resolve=True) if base.hydra.sweeper.params else {}
                args = [f"{key}={val}" for key, val in params.items()] + args
            # hydra's own expansion (BasicSweeper's), so that the cells checked here are the jobs it launches
            combos = BasicSweeper.split_arguments(parser.parse_overrides(args), None)[0]
            cells = []
            for combo in combos:
                cfg = compose("config", overrides=combo)
                _check_keys(cfg, Config)
                cells.append(OmegaConf.to_object(cfg))  # runs Config.__post_init__ validation
            if multirun:
                _check_gpu_workers(base.hydra.launcher, cells)
    except UserError:
        raise
    except Exception as e:  # hydra composition / omegaconf validation / our ValueErrors
        raise UserError(one_line(e)) from None
    finally:
        GlobalHydra.instance().clear()
    return cells


# A config group's option is a file name inside its group folder: a value like `../model/x` or an
# absolute path would make hydra load a YAML from anywhere.
_OPTION_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def _check_group_values(parsed, parser) -> None:
    for o in parsed:
        key = o.key_or_group
        if "." in key or not (key.startswith("hydra/") or (ABLATIONS / key).is_dir()):
            continue
        values = _sweep_values(o) if o.is_sweep_override() else [o.get_value_element_as_str()]
        for value in values:
            if value != "null" and (not _OPTION_NAME.fullmatch(value) or ".." in value):
                where = "a hydra plugin's option name, e.g. joblib" if key.startswith("hydra/") else (
                    f"the name of a file in ablations/{key}/ (vptbench list shows them)")
                raise UserError(f"{key}={value} is not an option name; {key} takes {where}, not a path")
            options = [] if key.startswith("hydra/") else group_options(key)
            if options and value != "null" and value not in options:
                raise UserError(f"unknown option '{value}'; valid {key} options: {', '.join(options)}")


def _check_launcher(launcher) -> None:
    """Launcher settings that would fail inside hydra with a traceback, as one line before any compute."""
    import shutil

    target = str(launcher.get("_target_", ""))
    n_jobs = launcher.get("n_jobs")
    if "joblib" in target.lower() and n_jobs is not None and (n_jobs == 0 or n_jobs < -1):
        raise UserError(f"hydra.launcher.n_jobs={n_jobs}: give the number of cells to run at once (>= 1), "
                        "or -1 for one per core")
    cpus = launcher.get("cpus_per_task")
    if cpus is not None and cpus < 1:
        raise UserError(f"hydra.launcher.cpus_per_task={cpus} must be >= 1 (cores per cell)")
    if target.endswith("SlurmLauncher"):
        absent = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if absent:
            raise UserError(f"hydra/launcher=submitit_slurm needs SLURM, but {' and '.join(absent)} "
                            f"{'is' if len(absent) == 1 else 'are'} not on PATH; run on a SLURM login node, or use "
                            "hydra/launcher=joblib (or submitit_local) on this machine")


def _check_gpu_workers(launcher, cells) -> None:
    """Parallel cells on this machine each claim a GPU of their own (bench.devices.claim_gpu): more
    cells at once than GPUs would make them share, so that is refused unless a GPU is pinned."""
    import os

    from .devices import gpu_count

    n_jobs = launcher.get("n_jobs")
    if n_jobs is None or not any(cfg.device == "cuda" for cfg in cells):
        return
    at_once = os.cpu_count() or 1 if n_jobs == -1 else n_jobs
    if at_once > gpu_count() > 0:
        raise UserError(f"hydra.launcher.n_jobs={n_jobs} runs {at_once} cells at once but this machine has "
                        f"{gpu_count()} GPU(s): pass hydra.launcher.n_jobs={gpu_count()} (one GPU each), or "
                        "device=cuda:0 to share one GPU on purpose")


def pin_device(overrides: List[str]) -> List[str]:
    """`device=auto` (the default) resolved once, here, and passed on to every job: the cell keys the
    grid tracks must be the ones the jobs compute. Cells sent to SLURM get a GPU when the job asks for
    one (hydra.launcher.gpus_per_node), whatever this login node has."""
    from .devices import device_kind

    given = [o for o in overrides if o.lstrip("+").split("=", 1)[0] == "device"]
    if given and given[-1].split("=", 1)[1] not in ("auto", ""):
        return overrides
    if launcher_name(overrides) == "submitit_slurm":
        gpus = next((o.split("=", 1)[1] for o in reversed(overrides)
                     if o.lstrip("+").startswith("hydra.launcher.gpus_per_node=")), "0")
        kind = "cuda" if gpus not in ("0", "null", "None", "") else "cpu"
    else:
        kind = device_kind("auto")
    return [o for o in overrides if o not in given] + [f"device={kind}"]


def _sweep_values(o) -> List[str]:
    from hydra.core.override_parser.types import Override

    return [Override._get_value_element_as_str(v) for v in o.sweep_iterator()]


def launcher_name(overrides: List[str]) -> str:
    return next((o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith("hydra/launcher=")), "basic")
