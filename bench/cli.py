"""`vptbench run | report | list | quickstart`.

`run` is a hydra app over the config tree in `ablations/` (`-m` sweeps a grid). Every cell of the
command line is composed and validated first, so a bad override or schedule stops the command with
one line on stderr before any compute. Each cell prints its record as one JSON object on the last
line of its stdout and writes it to the results store.
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import List



def _config_tree() -> Path:
    """The hydra config tree: the checkout's `ablations/` folder, which an install ships as `bench.ablations`
    (an editable install maps that name back to the folder, so edits there take effect)."""
    try:
        from . import ablations
    except ImportError:  # a source checkout run without installing it
        return Path(__file__).resolve().parent.parent / "ablations"
    return Path(ablations.__file__).resolve().parent


ABLATIONS = _config_tree()
USAGE = """usage: vptbench COMMAND [ARGS]

commands:
  run [-m] OVERRIDES...      run one cell (or a grid with -m), e.g.
                             vptbench run backbone=mixste pruner=cluster recoverer=attention 'schedule=[[3,81]]' metrics=[params,flops]
  report --store DIR --out DIR
                             write results.csv, results.md and plots from a results store
  compare BASELINE CURRENT [--mpjpe-tol MM] [--speed-tol FRACTION] [--partial] [--out FILE]
                             regression check of a store (or results.csv) against a baseline: exit 1 names
                             the regressed cells (a baseline cell or metric CURRENT lacks regresses unless
                             --partial), exit 2 if nothing could be compared, e.g.
                             vptbench compare results/baselines/quickstart_params_flops.csv results/store
  list                       show backbones, presets, pruners, recoverers, pipelines, data, models and experiments
  quickstart                 the main job: default ablation grid + paper-preset efficiency + report
"""

class UserError(Exception):
    """A bad command line or config: printed as one line, exit code 2."""


def _one_line(e: BaseException) -> str:
    msg = str(e).strip()
    m = re.search(r"Could not find '([^']+)'.*?Available options in '([^']+)':\n(.*?)(\n\S|$)", msg, re.S)
    if m:
        opts = ", ".join(o for o in m.group(3).split() if not o.startswith("base_"))
        return f"unknown option '{m.group(1)}'; valid {m.group(2)} options: {opts}"
    if e.__cause__ is not None and str(e.__cause__).strip():
        msg = f"{msg}: {str(e.__cause__).strip()}"
    lines = [l.strip() for l in msg.splitlines() if l.strip()]
    keep = [l for l in lines if not l.startswith(("object_type", "full_key", "reference_type"))]
    text = "; ".join(keep[:2]) if keep else type(e).__name__
    key = next((l.partition(":")[2].strip() for l in lines if l.startswith("full_key")), "")
    return f"{text} (key: {key})" if key and key not in text else text


def _by_preset(preset: str, table):
    """`${by_preset:${preset.name},{paper: X, tiny: Y}}`: a value that depends on the preset."""
    if preset not in table:
        raise ValueError(f"this config has no value for preset '{preset}'; valid presets here: {', '.join(table)}")
    return table[preset]


def _register() -> None:
    from omegaconf import OmegaConf

    from .config import register_configs

    register_configs()
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


def _compose_all(overrides: List[str], multirun: bool) -> list:
    """Compose and validate every cell the command line describes; returns their `Config`s."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from .config import Config

    _register()
    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except Exception as e:  # hydra's OverrideParseException
        raise UserError(_one_line(e)) from None
    _check_group_values(parsed, parser)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    sweeps = {o.get_key_element(): [o.get_key_element() + "=" + v for v in _sweep_values(o)]
              for o in parsed if o.is_sweep_override()}
    if sweeps and not multirun:
        raise UserError(f"{', '.join(sweeps)} sweep(s) several values; add -m to run a grid")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(ABLATIONS), version_base="1.3"):
            if multirun:  # the experiment's own grid (hydra.sweeper.params); the command line wins,
                # a fixed value pinning the key as a sweep replaces it (as hydra's BasicSweeper does)
                pinned = {o.get_key_element() for o in parsed if not o.is_sweep_override()}
                base = compose("config", overrides=fixed, return_hydra_config=True)
                _check_launcher(base.hydra.launcher)
                params = base.hydra.sweeper.params
                for key, val in (OmegaConf.to_container(params, resolve=True) if params else {}).items():
                    if key not in sweeps and key not in pinned:
                        o = parser.parse_override(f"{key}={val}")
                        sweeps[key] = [f"{key}={v}" for v in _sweep_values(o)] if o.is_sweep_override() else [o.input_line]
            cells = []
            for combo in itertools.product(*sweeps.values()):
                cfg = compose("config", overrides=fixed + list(combo))
                _check_keys(cfg, Config)
                cells.append(OmegaConf.to_object(cfg))  # runs Config.__post_init__ validation
            if multirun:
                _check_gpu_workers(base.hydra.launcher, cells)
    except UserError:
        raise
    except Exception as e:  # hydra composition / omegaconf validation / our ValueErrors
        raise UserError(_one_line(e)) from None
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


def _pin_device(overrides: List[str]) -> List[str]:
    """`device=auto` (the default) resolved once, here, and passed on to every job: the cell keys the
    grid tracks must be the ones the jobs compute. Cells sent to SLURM get a GPU when the job asks for
    one (hydra.launcher.gpus_per_node), whatever this login node has."""
    from .devices import device_kind

    given = [o for o in overrides if o.lstrip("+").split("=", 1)[0] == "device"]
    if given and given[-1].split("=", 1)[1] not in ("auto", ""):
        return overrides
    if _launcher(overrides) == "submitit_slurm":
        gpus = next((o.split("=", 1)[1] for o in reversed(overrides)
                     if o.lstrip("+").startswith("hydra.launcher.gpus_per_node=")), "0")
        kind = "cuda" if gpus not in ("0", "null", "None", "") else "cpu"
    else:
        kind = device_kind("auto")
    return [o for o in overrides if o not in given] + [f"device={kind}"]


def _sweep_values(o) -> List[str]:
    from hydra.core.override_parser.types import Override

    return [Override._get_value_element_as_str(v) for v in o.sweep_iterator()]


# Launchers that run several cells at once on this machine: their workers share its cores, so each
# gets cpu_count // parallel torch threads, and speed cells are timed alone afterwards.
LOCAL_PARALLEL = ("joblib", "submitit_local")


def _worker_threads() -> int | None:
    """Torch threads for this job under a parallel launcher (None: leave torch's default)."""
    import os

    from hydra.core.hydra_config import HydraConfig

    try:
        launcher = HydraConfig.get().launcher
    except ValueError:  # not inside a hydra job
        return None
    cpus = launcher.get("cpus_per_task")  # submitit: the job's own allocation
    if cpus:
        return int(cpus)
    n_jobs = launcher.get("n_jobs")  # joblib: cells at once on this machine
    if n_jobs is None:
        return None
    n = os.cpu_count() or 1
    return max(1, n // (n if n_jobs < 1 else min(n_jobs, n)))


def _in_joblib_worker() -> bool:
    from hydra.core.hydra_config import HydraConfig

    try:
        return "joblib" in str(HydraConfig.get().launcher.get("_target_", "")).lower()
    except ValueError:  # not inside a hydra job
        return False


def _task(cfg) -> None:
    """One hydra job (in this process or a worker): never raises, so the grid goes on; the summary
    at the end reads every cell's outcome from the store."""
    import torch
    from omegaconf import OmegaConf

    from .cell import run_cell

    try:
        _register()
        threads = _worker_threads()
        if threads:
            torch.set_num_threads(threads)
        cell = OmegaConf.to_object(cfg)
        if cell.device == "cuda" and _in_joblib_worker():  # several cells at once on this machine: a GPU
            from .devices import claim_gpu                    # each (SLURM and submitit_local jobs see only

            claim_gpu()                                       # their own GPUs through CUDA_VISIBLE_DEVICES)
        record = run_cell(cell)
    except Exception as e:  # noqa: BLE001 - reported by the summary as a cell without a record
        logging.getLogger(__name__).error("job failed before its cell was recorded: %s: %s", type(e).__name__, e)
        return
    sys.stdout.flush()
    print(json.dumps(record, sort_keys=True, default=str), flush=True)


def _launcher(overrides: List[str]) -> str:
    return next((o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith("hydra/launcher=")), "basic")


def cmd_run(args: List[str]) -> int:
    multirun = any(a in ("-m", "--multirun") for a in args)
    overrides = [a for a in args if not a.startswith("-")]
    flags = [a for a in args if a.startswith("-")]
    if any(f not in ("-m", "--multirun") for f in flags) and not any(f.startswith(("--cfg", "--info", "--help", "-c", "-i", "-h")) for f in flags):
        raise UserError(f"unknown flag(s) {' '.join(flags)}; vptbench run takes hydra overrides and -m")
    import hydra

    from .grid import Grid

    if flags and not set(flags) <= {"-m", "--multirun"}:  # --cfg, --info, --help: hydra prints, nothing runs
        _register()
        sys.argv = ["vptbench run"] + args
        hydra.main(config_path=str(ABLATIONS), config_name="config", version_base="1.3")(_task)()
        return 0
    overrides = _pin_device(overrides)
    grid = Grid(_compose_all(overrides, multirun))
    grid.preflight(check_devices=_launcher(overrides) != "submitit_slurm")
    if not grid.incomplete():  # a finished grid: no launcher, no work
        for record in grid.stored_records():
            print(json.dumps(record, sort_keys=True, default=str))
        print(f"vptbench: all {len(grid)} cell(s) already in the store (rerun=true recomputes them)", file=sys.stderr)
        return 0
    deferred = multirun and _launcher(overrides) in LOCAL_PARALLEL and grid.has_speed()
    if deferred:  # time speed alone, after the parallel part: co-running cells would skew it
        overrides = overrides + [f"metrics=[{','.join(grid.metrics_without_speed())}]"]
    with grid.progress():
        if not deferred or grid.metrics_without_speed():
            sys.argv = ["vptbench run"] + [f for f in flags] + overrides
            hydra.main(config_path=str(ABLATIONS), config_name="config", version_base="1.3")(_task)()
        if deferred:
            for record in grid.run_speed_serially():
                print(json.dumps(record, sort_keys=True, default=str), flush=True)
    skipped = grid.skipped_speed()
    if skipped:
        print(f"vptbench: {len(skipped)} cell(s) not timed:\n  " + "\n  ".join(skipped), file=sys.stderr)
    failed = grid.summary()
    if failed:
        print(f"vptbench: {len(failed)} of {len(grid)} cell(s) failed:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    return 0


def cmd_report(args: List[str]) -> int:
    from .report import write_report

    p = argparse.ArgumentParser(prog="vptbench report")
    p.add_argument("--store", required=True, help="results store directory")
    p.add_argument("--out", required=True, help="output directory for tables and plots")
    a = p.parse_args(args)
    for path in write_report(a.store, a.out):
        print(path)
    return 0


def cmd_compare(args: List[str]) -> int:
    from .report.compare import compare

    p = argparse.ArgumentParser(prog="vptbench compare")
    p.add_argument("baseline", help="results store directory or results.csv")
    p.add_argument("current", help="results store directory or results.csv")
    p.add_argument("--mpjpe-tol", type=float, default=0.5, help="allowed MPJPE / P-MPJPE rise in mm")
    p.add_argument("--speed-tol", type=float, default=0.10, help="allowed frames/s drop (fraction; at least 3x CV)")
    p.add_argument("--partial", action="store_true",
                   help="allow CURRENT to lack baseline cells and metrics: list them as not compared instead of "
                        "failing (gives up that protection)")
    p.add_argument("--out", help="also write the markdown summary here (e.g. $GITHUB_STEP_SUMMARY)")
    a = p.parse_args(args)
    result = compare(a.baseline, a.current, mpjpe_tol=a.mpjpe_tol, speed_tol=a.speed_tol, partial=a.partial)
    text = result.markdown(a.baseline, a.current)
    print(text)
    if a.out:
        with open(a.out, "a") as f:
            f.write(text + "\n")
    for r in result.regressions:
        print(f"vptbench compare: REGRESSED {r['cell']} {r['metric']}: {r['baseline']} -> {r['current']} ({r['rule']})",
              file=sys.stderr)
    for cell in [] if a.partial else result.missing:
        print(f"vptbench compare: REGRESSED {cell}: in BASELINE, missing from CURRENT (--partial allows it)",
              file=sys.stderr)
    print(f"vptbench compare: {result.counts()}", file=sys.stderr)
    return 1 if result.regressed else 0


def cmd_list(args: List[str]) -> int:
    import backbones
    from backbones.hourglass import PIPELINES

    print("backbones:  " + ", ".join(f"{b} (presets: {', '.join(backbones.list_presets(b))})"
                                     for b in backbones.list_backbones()))
    print("pruners:    " + ", ".join(backbones.list_pruners()))
    print("recoverers: " + ", ".join(backbones.list_recoverers()))
    print("pipelines:  " + ", ".join(PIPELINES))
    print("data:       " + ", ".join(sorted(p.stem for p in (ABLATIONS / "data").glob("*.yaml"))))
    print("models:     " + ", ".join(sorted(p.stem for p in (ABLATIONS / "model").glob("*.yaml")))
          + "  (model=NAME: a backbone with its published pruning)")
    print("recipes:    " + ", ".join(sorted(p.stem for p in (ABLATIONS / "recipe").glob("*.yaml")))
          + "  (recipe=NAME: a paper's training recipe, for paper presets on a GPU)")
    print("experiments: " + ", ".join(sorted(p.stem for p in (ABLATIONS / "experiment").glob("*.yaml")))
          + "  (vptbench run -m experiment=NAME [preset=tiny])")
    return 0


# The main job's paper-preset cells: MixSTE, HoT w. MixSTE, TPC w. MixSTE (HoT, CVPR 2024, official settings).
PAPER_CELLS = [
    [],
    ["pruner=cluster", "recoverer=attention", "schedule=[[3,81]]"],
    ["pruner=cluster", "pipeline=seq2frame", "schedule=[[7,61]]"],
]


def cmd_quickstart(args: List[str]) -> int:
    p = argparse.ArgumentParser(prog="vptbench quickstart")
    p.add_argument("--store", default="results/quickstart")
    p.add_argument("--out", default="reports/quickstart")
    p.add_argument("--steps", type=int, default=None, help="training steps per cell (default: the experiment's)")
    p.add_argument("--rerun", action="store_true", help="recompute cells already in the store")
    a = p.parse_args(args)
    common = [f"store={a.store}"] + (["rerun=true"] if a.rerun else [])
    runs = [["-m", "experiment=quickstart"] + common + ([f"train.steps={a.steps}"] if a.steps is not None else [])]
    runs += [["backbone=mixste", "preset=paper", "metrics=[params,flops,speed]",
              "speed.warmup=1", "speed.iters=1", "speed.repeats=5"] + cell + common for cell in PAPER_CELLS]
    failed = 0
    for run in runs:
        print("+ vptbench run " + " ".join(run), file=sys.stderr, flush=True)
        failed += subprocess.call([sys.executable, "-m", "bench.cli", "run", *run], stdout=subprocess.DEVNULL) != 0
    rc = cmd_report(["--store", a.store, "--out", a.out])
    return 1 if failed else rc


COMMANDS = {"run": cmd_run, "report": cmd_report, "compare": cmd_compare, "list": cmd_list, "quickstart": cmd_quickstart}


def main(argv: List[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"vptbench: unknown command {argv[0]!r}; valid commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return COMMANDS[argv[0]](argv[1:])
    except UserError as e:
        print(f"vptbench: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # bad input found while running (e.g. a missing data file)
        print(f"vptbench: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
