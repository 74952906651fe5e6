"""`vptbench run | report | compare | history | flops | list | quickstart`.

`run` is a hydra app over the config tree in `ablations/` (`-m` sweeps a grid). Every cell of the
command line is composed and validated first (`bench.compose`), so a bad override or schedule stops
the command with one line on stderr before any compute. Cells run here one after another (the default
launcher) or in hydra's parallel launchers; each prints its record as one JSON object on the last line
of its stdout and writes it to the results store. Each command imports only what it uses, so
`vptbench report` and `compare` never load torch.
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import List

from .compose import ABLATIONS, UserError, compose_cells, launcher_name, pin_device, register_resolvers



USAGE = """usage: vptbench COMMAND [ARGS]

commands:
  run [-m] OVERRIDES...      run one cell (or a grid with -m), e.g.
                             vptbench run backbone=mixste pruner=cluster recoverer=attention 'schedule=[[3,81]]' metrics=[params,flops]
  report --store DIR --out DIR
                             write results.csv, results.md and plots from a results store
  compare BASELINE CURRENT [--mpjpe-tol MM] [--speed-tol FRACTION] [--partial] [--across-machines] [--out FILE]
                             regression check of a store (or results.csv) against a baseline: exit 1 names
                             the regressed cells (a baseline cell or metric CURRENT lacks regresses unless
                             --partial), exit 2 if nothing could be compared, e.g.
                             vptbench compare results/baselines/quickstart_params_flops.csv results/store
  compare --rev BASE [HEAD] OVERRIDES... [--speed-tol FRACTION] [--budget S] [-m] [--out FILE]
                             A/B of two revisions in one run (HEAD: the working tree unless given): each in its
                             own git worktree and worker, timed repeats interleaved in random order; per cell
                             the time ratio with a 95% signed-rank interval, regression / faster / unchanged /
                             inconclusive; exit 1 on a regression, e.g.
                             vptbench compare --rev main backbone=mixste preset=tiny 'metrics=[params,flops,speed]'
  flops OVERRIDES...         one cell's computation under every counting convention (vptbench gflops, fvcore,
                             thop, torchprofile, ptflops, FlopCounterMode), per clip and per output frame,
                             e.g. vptbench flops model=hot_mixste
  history add STORE [--db FILE] [--repo DIR]
                             append a store's (or results.csv's) measurements to the history (default
                             results/history.sqlite), keyed by cell, metric, commit and machine fingerprint
  history check [--db FILE] [--accepted FILE] [--out FILE]
                             find every step of every series over commits; exit 1 on a regression that is
                             not in the accepted-steps file (default results/baselines/accepted_steps.csv)
  history report --out DIR [--db FILE] [--accepted FILE] [--no-png]
                             the trend page: DIR/index.html (one self-contained file, a plot per cell x metric
                             over commits, machines as series, steps marked) and the plots as DIR/png/*.png
  list                       show backbones, presets, pruners, recoverers, pipelines, data, models and experiments
  quickstart                 the main job: default ablation grid + paper-preset efficiency + report
"""

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
        register_resolvers()
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


def cmd_run(args: List[str]) -> int:
    multirun = any(a in ("-m", "--multirun") for a in args)
    overrides = [a for a in args if not a.startswith("-")]
    flags = [a for a in args if a.startswith("-")]
    if any(f not in ("-m", "--multirun") for f in flags) and not any(f.startswith(("--cfg", "--info", "--help", "-c", "-i", "-h")) for f in flags):
        raise UserError(f"unknown flag(s) {' '.join(flags)}; vptbench run takes hydra overrides and -m")
    import hydra

    from .grid import Grid

    if flags and not set(flags) <= {"-m", "--multirun"}:  # --cfg, --info, --help: hydra prints, nothing runs
        register_resolvers()
        sys.argv = ["vptbench run"] + args
        hydra.main(config_path=str(ABLATIONS), config_name="config", version_base="1.3")(_task)()
        return 0
    overrides = pin_device(overrides)
    grid = Grid(compose_cells(overrides, multirun))
    grid.preflight(check_devices=launcher_name(overrides) != "submitit_slurm")
    if not grid.incomplete():  # a finished grid: no launcher, no work
        for record in grid.stored_records():
            print(json.dumps(record, sort_keys=True, default=str))
        print(f"vptbench: all {len(grid)} cell(s) already in the store (rerun=true recomputes them)", file=sys.stderr)
        return 0
    deferred = multirun and launcher_name(overrides) in LOCAL_PARALLEL and grid.has_speed()
    if deferred:  # time speed alone, after the parallel part: co-running cells would skew it
        overrides = overrides + [f"metrics=[{','.join(grid.metrics_without_speed())}]"]
    with grid.progress():
        if launcher_name(overrides) == "basic":  # one cell after another, here: run the cells composed above,
            for record in grid.run_here():   # rather than have hydra compose each of them a second time
                print(json.dumps(record, sort_keys=True, default=str), flush=True)
        elif not deferred or grid.metrics_without_speed():
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


def _summary(text: str, out: str | None) -> None:
    """A command's markdown summary: to stdout, and appended to `out` (e.g. $GITHUB_STEP_SUMMARY)."""
    print(text)
    if out:
        with open(out, "a") as f:
            f.write(text + "\n")


def cmd_compare(args: List[str]) -> int:
    if "--rev" in args or any(a.startswith("--rev=") for a in args):
        return cmd_compare_revisions(args)
    from .report.compare import compare

    p = argparse.ArgumentParser(prog="vptbench compare")
    p.add_argument("baseline", help="results store directory or results.csv")
    p.add_argument("current", help="results store directory or results.csv")
    p.add_argument("--mpjpe-tol", type=float, default=0.5, help="allowed MPJPE / P-MPJPE rise in mm")
    p.add_argument("--speed-tol", type=float, default=0.10, help="allowed frames/s drop (fraction; at least 3x CV)")
    p.add_argument("--partial", action="store_true",
                   help="allow CURRENT to lack baseline cells and metrics: list them as not compared instead of "
                        "failing (gives up that protection)")
    p.add_argument("--across-machines", action="store_true",
                   help="compare frames/s of records measured on different machines (not by default: they differ ~2x)")
    p.add_argument("--out", help="also write the markdown summary here (e.g. $GITHUB_STEP_SUMMARY)")
    a = p.parse_args(args)
    result = compare(a.baseline, a.current, mpjpe_tol=a.mpjpe_tol, speed_tol=a.speed_tol, partial=a.partial,
                     across_machines=a.across_machines)
    text = result.markdown(a.baseline, a.current)
    _summary(text, a.out)
    for r in result.regressions:
        print(f"vptbench compare: REGRESSED {r['cell']} {r['metric']}: {r['baseline']} -> {r['current']} ({r['rule']})",
              file=sys.stderr)
    for cell in [] if a.partial else result.missing:
        print(f"vptbench compare: REGRESSED {cell}: in BASELINE, missing from CURRENT (--partial allows it)",
              file=sys.stderr)
    if result.other_machine:
        r = result.other_machine[0]
        print(f"vptbench compare: frames/s of {len(result.other_machine)} cell(s) not compared: baseline measured on "
              f"{r['baseline'] or 'an unrecorded machine'}, current on {r['current'] or 'an unrecorded machine'} "
              "(--across-machines compares them)", file=sys.stderr)
    print(f"vptbench compare: {result.counts()}", file=sys.stderr)
    return 1 if result.regressed else 0


def cmd_history(args: List[str]) -> int:
    from . import history as H

    p = argparse.ArgumentParser(prog="vptbench history")
    sub = p.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="append a store's measurements to the history")
    add.add_argument("store", help="results store directory or results.csv")
    add.add_argument("--db", default=H.DEFAULT_DB, help=f"history file (default {H.DEFAULT_DB})")
    add.add_argument("--repo", default=".", help="the git checkout the records were measured in (default .)")
    chk = sub.add_parser("check", help="find steps over commits; exit 1 on an unaccepted regression")
    chk.add_argument("--db", default=H.DEFAULT_DB, help=f"history file (default {H.DEFAULT_DB})")
    chk.add_argument("--accepted", default=H.DEFAULT_ACCEPTED,
                     help=f"reviewed CSV of accepted steps: commit, cell, metric, reason (default {H.DEFAULT_ACCEPTED})")
    chk.add_argument("--out", help="also write the markdown summary here (e.g. $GITHUB_STEP_SUMMARY)")
    rep = sub.add_parser("report", help="write the trend page: DIR/index.html (self-contained) and DIR/png/")
    rep.add_argument("--db", default=H.DEFAULT_DB, help=f"history file (default {H.DEFAULT_DB})")
    rep.add_argument("--accepted", default=H.DEFAULT_ACCEPTED, help="reviewed CSV of accepted steps (as check)")
    rep.add_argument("--out", required=True, help="directory for index.html and png/")
    rep.add_argument("--no-png", action="store_true", help="the page only")
    a = p.parse_args(args)
    if a.action == "report":
        from .trend import write_trend_page

        n = write_trend_page(a.out, db=a.db, accepted_path=a.accepted, pngs=not a.no_png)
        out = Path(a.out)
        print(f"vptbench history: {out / 'index.html'}: {n['plots']} plot(s), {n['steps']} step(s), "
              f"{n['regressions']} regression(s); {n['pngs']} PNG(s) in {out / 'png'}", file=sys.stderr)
        return 0
    if a.action == "add":
        n = H.add_records(a.store, db=a.db, repo=a.repo)
        print(f"vptbench history: {n['points']} point(s) added to {a.db}"
              + (f"; skipped {n['skipped_no_commit']} record(s) without a git commit" if n["skipped_no_commit"] else "")
              + (f"; skipped {n['skipped_unknown_commit']} record(s) whose commit {a.repo} does not have (a shallow "
                 "clone? fetch its history)" if n["skipped_unknown_commit"] else "")
              + (f"; left out the timings of {n['skipped_noisy']} record(s) that stayed noisy (speed_noisy)"
                 if n["skipped_noisy"] else ""), file=sys.stderr)
        return 0
    steps = H.check_history(a.db, a.accepted)
    text = H.steps_markdown(steps, a.db)
    _summary(text, a.out)
    bad = [s for s in steps if s.verdict == "regression"]
    for s in bad:
        print(f"vptbench history: REGRESSED {s.label} {s.metric} on machine {s.machine} at {s.first[:12]} "
              f"(after {s.previous[:12]}): {s.change}", file=sys.stderr)
    return 1 if bad else 0


def cmd_compare_revisions(args: List[str]) -> int:
    """`vptbench compare --rev BASE [HEAD] OVERRIDES...`: see bench/ab.py."""
    from .ab import ABError, run_ab

    p = argparse.ArgumentParser(prog="vptbench compare --rev")
    p.add_argument("--rev", required=True, help="the base revision (branch, tag, hash)")
    p.add_argument("-m", "--multirun", action="store_true", help="the overrides sweep a grid")
    p.add_argument("--speed-tol", type=float, default=0.02,
                   help="a slowdown beyond this fraction is a regression once the interval lies past it")
    p.add_argument("--confidence", type=float, default=0.95, help="of the signed-rank interval")
    p.add_argument("--budget", type=float, default=60.0, help="seconds of timing per cell at most")
    p.add_argument("--min-rounds", type=int, default=30)
    p.add_argument("--segment", type=int, default=5,
                   help="rounds between moving both timing copies to fresh memory; the interval is over segments "
                        "(0: never, one value per round)")
    p.add_argument("--max-rounds", type=int, default=1000)
    p.add_argument("--repeat-s", type=float, default=0.05, help="seconds one timed repeat lasts (forwards per repeat)")
    p.add_argument("--seed", type=int, default=0, help="of the per-round order")
    p.add_argument("--mpjpe-tol", type=float, default=0.5, help="allowed MPJPE / P-MPJPE rise in mm")
    p.add_argument("--own-kernels", action="store_true",
                   help="let each revision measure its own kernel choices (default: HEAD uses BASE's where the "
                        "shapes agree, so a near-tie measured differently is not reported as a change)")
    p.add_argument("--out", help="also write the markdown summary here (e.g. $GITHUB_STEP_SUMMARY)")
    p.add_argument("rest", nargs="*", help="[HEAD] then the cells' overrides, as vptbench run takes them")
    a = p.parse_args(args)
    heads = [x for x in a.rest if "=" not in x]
    overrides = [x for x in a.rest if "=" in x]
    if len(heads) > 1:
        raise UserError(f"compare --rev takes one HEAD revision, got {' '.join(heads)}; overrides are KEY=VALUE")
    if not overrides:
        raise UserError("compare --rev needs the cells' overrides, e.g. backbone=mixste preset=tiny 'metrics=[speed]'")
    if not heads:  # the working tree: its config schema is this one, so a bad override is one line before any checkout
        compose_cells(overrides, a.multirun)
    try:
        result = run_ab(".", a.rev, heads[0] if heads else "", overrides, a.multirun, tolerance=a.speed_tol,
                        confidence=a.confidence, budget_s=a.budget, min_rounds=a.min_rounds,
                        max_rounds=a.max_rounds, seed=a.seed, target_s=a.repeat_s, mpjpe_tol=a.mpjpe_tol,
                        segment=a.segment,
                        same_kernels=not a.own_kernels, log=lambda m: print(m, file=sys.stderr, flush=True))
    except ABError as e:
        raise UserError(str(e)) from None
    text = result.markdown()
    _summary(text, a.out)
    for r in result.regressions:
        print(f"vptbench compare: REGRESSED {r['cell']} {r['metric']}: {r['base']} -> {r['head']} ({r['change']})",
              file=sys.stderr)
    for c in result.inconclusive:
        print(f"vptbench compare: INCONCLUSIVE {c.label}: {c.speed.describe()}", file=sys.stderr)
    return 1 if result.regressed else 0


def cmd_flops(args: List[str]) -> int:
    """`vptbench flops OVERRIDES`: the cell the overrides describe, counted every way (bench.measure.conventions)."""
    if any(a.startswith("-") for a in args):
        raise UserError("vptbench flops takes the overrides of one cell (no -m), e.g. vptbench flops model=hot_mixste")
    (cfg,) = compose_cells(args + ["metrics=[flops]"], multirun=False)
    import torch

    from .cell import build_model, cell_label
    from .measure.conventions import CONVENTIONS, INSTALL_HINT, count_conventions

    model = build_model(cfg).eval()
    clip = torch.randn(1, model.num_frames, model.backbone.num_joints, model.backbone.in_chans,
                       generator=torch.Generator().manual_seed(cfg.seed))
    counts = count_conventions(model, (clip,), model.frames_out)
    print(f"{cell_label(cfg)}: one clip of {model.num_frames} frames in, {model.frames_out} frame(s) out "
          f"({cfg.pipeline.name}), batch 1")
    print()
    print("| counter | unit | counts | per clip (G) | per output frame (G) |")
    print("|---|---|---|---|---|")
    for c in CONVENTIONS:
        if counts.giga.get(c.key) is None:
            print(f"| {c.counter} | {c.unit} | {c.counts} | not installed: {INSTALL_HINT} | – |")
        else:
            print(f"| {c.counter} | {c.unit} | {c.counts} | {counts.giga[c.key]:.4f} | {counts.per_frame(c.key):.6f} |")
    print()
    print("MACs are multiply-accumulates; FLOPs = 2 x MACs. Papers print either, per clip or per frame: "
          "compare like with like (README, 'Which number is which').")
    return 0


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


# both ignored by git: not reports/quickstart, the committed example timed on another CPU, which a user's
# run must not overwrite (the checkout stays clean); a maintainer refreshes it with --out reports/quickstart
QUICKSTART_STORE, QUICKSTART_OUT = "results/quickstart", "results/quickstart-report"


def cmd_quickstart(args: List[str]) -> int:
    p = argparse.ArgumentParser(prog="vptbench quickstart")
    p.add_argument("--store", default=QUICKSTART_STORE)
    p.add_argument("--out", default=QUICKSTART_OUT)
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


COMMANDS = {"run": cmd_run, "report": cmd_report, "compare": cmd_compare, "history": cmd_history, "flops": cmd_flops,
            "list": cmd_list,
            "quickstart": cmd_quickstart}


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
