"""`vptbench compare --rev BASE [HEAD] OVERRIDES...`: two revisions measured in one run, interleaved.

Each revision is checked out in its own git worktree (HEAD defaults to the working tree as it is,
uncommitted edits included) and served by one long-lived worker process (`bench/ab_worker.py`) that
imports that revision's code, composes the cells from the same overrides, computes params, FLOPs and
accuracy with the revision's own `run_cell` (seeded: deterministic on one machine) and builds each cell's
timing copy as its speed metric does. Then, cell by cell, rounds: each round times one repeat of A and
one of B in an order drawn at random (seeded), so a slow spell of the machine hits both; only one worker
runs at a time. Two processes of the *same* code differed by up to ±12 % for their whole life on an AMD EPYC
VM with 2 vCPUs (the mean of 200 paired rounds; glibc's defaults: ±8-12 %; with freed memory kept: ±2-5 %),
far more than the drift interleaving cancels; binding the OpenMP threads alike (OMP_PROC_BIND) and turning
address-space randomisation off (`setarch -R`) brought three self-runs to +1.7, -1.0, +1.2 %: what is
left still moved self-runs of 40 rounds (fresh workers each) apart by a standard deviation of 1.5-4 %
(three experiments of eight), and a fifth of their 95 % intervals excluded 1: the rounds of one pair of
processes are not independent draws. So every `segment` rounds (default 5) both workers move their
timing copy and its input to fresh memory (a deep copy, the old one freed and the free heap returned with
malloc_trim, one untimed forward), and the interval is taken over segments, not rounds: what a segment's
rounds share (their pages, a stretch of load) counts once. With it, 0 of 20 self-runs was a false
regression; whether the renewal itself narrows the spread between pairs is not established (the
experiments disagree), see reports/ab_error_rates/. The verdict per cell is `bench.paired`'s signed-rank
interval of the segments' mean log time ratios (a segment counts once: its rounds share its pages),
checked after every few rounds from `min_rounds` on, until it is decided or the cell's time budget is spent;
the error rates this gives are measured in reports/ab_error_rates/.

A revision whose dependencies (pyproject's `dependencies` and the `flops` extra) differ from the
working tree's runs in its own virtual environment with those dependencies, cached by their digest.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .paired import Verdict, log_ratios, min_rounds_for, segment_means, verdict
from .report.compare import ACCURACY, EXACT, REL_EXACT  # the metrics `compare` checks, and how exactly

__all__ = ["run_ab", "ABResult", "Side"]

WORKER = Path(__file__).with_name("ab_worker.py")


class ABError(ValueError):
    """A revision that cannot be measured (unknown, no worktree, a worker that failed): one line, exit 2."""


@dataclass
class Side:
    name: str                  # "BASE" | "HEAD"
    rev: str                   # as given ("" = the working tree)
    commit: str
    root: Path
    python: str = sys.executable
    env_note: str = ""

    @property
    def label(self) -> str:
        return f"{self.name} {self.rev} ({self.commit[:10]})" if self.rev else f"{self.name} working tree (on {self.commit[:10]})"


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if done.returncode:
        raise ABError(f"git {' '.join(args)}: {(done.stderr.strip().splitlines() or ['failed'])[-1]}")
    return done.stdout.strip()


def _commit(repo: Path, rev: str) -> str:
    try:
        return _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except ABError:
        raise ABError(f"--rev {rev!r} is not a commit of {repo} (a branch, tag or hash, e.g. main or HEAD~1)") from None


def _dependencies(root: Path) -> Tuple[List[str], List[str]]:
    import tomllib

    project = tomllib.loads((root / "pyproject.toml").read_text()).get("project", {})
    return sorted(project.get("dependencies", [])), sorted(project.get("optional-dependencies", {}).get("flops", []))


def environment_for(side_root: Path, reference_root: Path, cache: Optional[Path] = None,
                    log=None) -> Tuple[str, str]:
    """(python, note): this interpreter when the revision's dependencies are the reference's; otherwise a
    cached virtual environment holding exactly the revision's (the code itself comes from its worktree)."""
    deps = _dependencies(side_root)
    if deps == _dependencies(reference_root):
        return sys.executable, ""
    wanted = deps[0] + deps[1]
    digest = hashlib.sha256(json.dumps(wanted).encode()).hexdigest()[:12]
    cache = cache or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vptbench" / "ab-env"
    env = cache / digest
    python = env / "bin" / "python"
    note = f"own environment {env} (its dependencies differ from the working tree's)"
    if (env / "complete").exists():
        return str(python), note
    building = cache / f"{digest}.building-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", *([] if wanted else ["--without-pip"]), str(building)], check=True,
                   capture_output=True)
    done = subprocess.run([str(building / "bin" / "python"), "-m", "pip", "install", "-q", *wanted], capture_output=True,
                          text=True) if wanted else subprocess.CompletedProcess([], 0)
    if done.returncode:
        shutil.rmtree(building, ignore_errors=True)
        last = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise ABError(f"could not install the dependencies of {side_root.name} ({', '.join(wanted)}): {last}")
    (building / "complete").write_text(json.dumps(wanted))
    shutil.rmtree(env, ignore_errors=True)
    building.rename(env)  # only its interpreter is used, and that is a link to this one's: the move is safe
    if log:
        log(f"{note}: created in {time.perf_counter() - t0:.0f} s")
    return str(python), note


def _no_aslr() -> List[str]:
    """`setarch -R` where it exists and works: the workers' address layout is then a function of their code
    (with PYTHONHASHSEED fixed), not drawn afresh per process."""
    tool = shutil.which("setarch")
    if not tool or subprocess.run([tool, "-R", "true"], capture_output=True).returncode:
        return []
    return [tool, "-R"]


_NO_ASLR = _no_aslr()


class Worker:
    """One revision's worker process; requests are answered in order, one JSON line each."""

    def __init__(self, side: Side, log_path: Path):
        self.side, self.log_path = side, log_path
        self._log = open(log_path, "w")
        # OpenMP threads bound to cores alike in both workers: left to the scheduler, each process's threads
        # settle on their own vCPUs, and two processes of the same code then differ by up to 12 % for as long
        # as they live (measured: AMD EPYC VM, 2 vCPUs; bound, by 1-2 %)
        env = dict({"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"}, **os.environ, PYTHONPATH="", PYTHONHASHSEED="0")
        self.proc = subprocess.Popen(_NO_ASLR + [side.python, "-c", WORKER.read_text(), str(side.root)], cwd=side.root,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     bufsize=1, env=env)

    def ask(self, **request) -> Dict[str, Any]:
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            self._log.flush()
            tail = [l for l in self.log_path.read_text().splitlines() if l.strip()][-1:] or ["no output"]
            raise ABError(f"{self.side.label}: its worker exited ({tail[0].strip()}); log: {self.log_path}")
        answer = json.loads(line)
        if "error" in answer:
            raise ABError(f"{self.side.label}: {answer['error']}")
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "exit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (BrokenPipeError, subprocess.TimeoutExpired, OSError):
                self.proc.kill()
        self._log.close()


@dataclass
class CellResult:
    label: str
    rows: List[dict] = field(default_factory=list)     # cell, metric, base, head, change, rule, verdict
    speed: Optional[Verdict] = None
    seconds: float = 0.0
    paths: Tuple[str, str] = ("", "")


@dataclass
class ABResult:
    base: Side
    head: Side
    tolerance: float
    confidence: float
    cells: List[CellResult] = field(default_factory=list)

    @property
    def regressions(self) -> List[dict]:
        return [r for c in self.cells for r in c.rows if r["verdict"] == "REGRESSED"]

    @property
    def regressed(self) -> bool:
        return bool(self.regressions)

    @property
    def inconclusive(self) -> List[CellResult]:
        return [c for c in self.cells if c.speed is not None and not c.speed.decided]

    def markdown(self) -> str:
        lines = [f"## A/B: {self.head.label} against {self.base.label}", "",
                 f"Speed: time ratio HEAD/BASE per round (rounds interleaved, order random), Hodges-Lehmann estimate "
                 f"and {100 * self.confidence:g}% signed-rank interval; a regression when the interval lies above "
                 f"+{100 * self.tolerance:g}%. Params and FLOPs must match exactly; MPJPE as `vptbench compare`.", ""]
        for side in (self.base, self.head):
            if side.env_note:
                lines.append(f"- {side.name}: {side.env_note}")
        lines += ["| cell | metric | BASE | HEAD | change | rule | verdict |", "|---|---|---|---|---|---|---|"]
        for c in self.cells:
            lines += [f"| {r['cell']} | {r['metric']} | {r['base']} | {r['head']} | {r['change']} | {r['rule']} | "
                      f"{r['verdict']} |" for r in c.rows]
        differing = [c for c in self.cells if c.paths[0] != c.paths[1]]
        if differing:
            lines += ["", "Timing paths that differ between the revisions (kernels chosen by measurement):"]
            lines += [f"- {c.label}: BASE {c.paths[0]}; HEAD {c.paths[1]}" for c in differing]
        lines += ["", f"{len(self.cells)} cell(s), {sum(c.seconds for c in self.cells):.0f} s of timing; "
                      f"{len(self.regressions)} regression(s), {len(self.inconclusive)} inconclusive"]
        return "\n".join(lines)


def _exact_rows(label: str, a: dict, b: dict, mpjpe_tol: float) -> List[dict]:
    rows = []
    for metric in EXACT + ACCURACY:
        va, vb = a.get(metric), b.get(metric)
        if va is None and vb is None:
            continue
        if va is None or vb is None:
            rows.append(dict(cell=label, metric=metric, base=_fmt(va), head=_fmt(vb), change="measured on one side",
                             rule="both measure it", verdict="REGRESSED" if vb is None else "ok"))
            continue
        if metric in EXACT:
            bad = not math.isclose(va, vb, rel_tol=REL_EXACT, abs_tol=0.0)
            rows.append(dict(cell=label, metric=metric, base=_fmt(va), head=_fmt(vb), change=f"{vb - va:+.6g}",
                             rule="must match (rel 1e-9)", verdict="REGRESSED" if bad else "ok"))
        else:
            rows.append(dict(cell=label, metric=metric, base=f"{va:.2f}", head=f"{vb:.2f}", change=f"{vb - va:+.2f} mm",
                             rule=f"rise ≤ {mpjpe_tol:g} mm", verdict="REGRESSED" if vb - va > mpjpe_tol else "ok"))
    return rows


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.6g}"


def _speed_row(label: str, a_s: List[float], b_s: List[float], frames: float, v: Verdict) -> dict:
    fa, fb = frames / statistics.median(a_s), frames / statistics.median(b_s)
    word = {"regression": "REGRESSED", "faster": "faster", "unchanged": "ok", "inconclusive": "inconclusive"}
    return dict(cell=label, metric="frames_per_s", base=f"{fa:.1f}", head=f"{fb:.1f}", change=v.describe(),
                rule=f"slowdown ≤ {100 * v.tolerance:g}%", verdict=word[v.verdict])


SEGMENT = 5  # rounds per segment: see the module docstring


def _time_cell(workers: Tuple[Worker, Worker], index: int, rng: random.Random, tolerance: float, confidence: float,
               budget_s: float, min_rounds: int, max_rounds: int,
               segment: int) -> Tuple[List[float], List[float], Verdict, float]:
    """Rounds of one repeat per revision, in random order, until decided, out of budget or at max_rounds. The
    first round of each cell is a warm-up and not counted (the other worker's cells ran last). The interval
    is looked at from `min_rounds` on, each look 1.5x the rounds of the last (about ten looks in a long
    cell), so that stopping at the first decided look does not spend the confidence on hundreds of tries."""
    times: Tuple[List[float], List[float]] = ([], [])
    t0 = time.perf_counter()
    look = min_rounds
    for rnd in range(max_rounds + 1):
        if segment and rnd > 1 and (rnd - 1) % segment == 0:  # a new segment: both timing copies in fresh memory
            for side in rng.sample((0, 1), 2):
                workers[side].ask(op="reshuffle", cell=index)
        for side in rng.sample((0, 1), 2):
            seconds = workers[side].ask(op="time", cell=index)["seconds"]
            if rnd:
                times[side].append(seconds)
        n = len(times[0])
        out_of_time = time.perf_counter() - t0 > budget_s
        if n and (n >= look or n >= max_rounds or (out_of_time and n >= min_rounds)):
            result = segment_verdict(times, segment, tolerance, confidence)
            if result.decided or out_of_time or n >= max_rounds:
                return times[0], times[1], result, time.perf_counter() - t0
            look = max(n + 1, math.ceil(1.5 * n))
    return times[0], times[1], segment_verdict(times, segment, tolerance, confidence), time.perf_counter() - t0


def segment_verdict(times: Tuple[List[float], List[float]], segment: int, tolerance: float,
                    confidence: float) -> Verdict:
    """The verdict on the segments' mean log time ratios (see `run_ab`), in rounds."""
    v = verdict(segment_means(log_ratios(*times), segment), tolerance, confidence)
    per = max(1, segment)
    return replace(v, rounds=len(times[0]), rounds_needed=v.rounds_needed * per if v.rounds_needed else None)


def run_ab(repo: str, base: str, head: str, overrides: List[str], multirun: bool, tolerance: float = 0.02,
           confidence: float = 0.95, budget_s: float = 60.0, min_rounds: int = 30, max_rounds: int = 1000,
           seed: int = 0, target_s: float = 0.05, mpjpe_tol: float = 0.5, same_kernels: bool = True,
           segment: int = SEGMENT, log=print) -> ABResult:
    """A/B of revision `base` against `head` ("" = the working tree) on the cells `overrides` compose to.
    `segment`: rounds between renewals of both timing copies' memory, and the unit of the interval (0: never
    renewed, one value per round)."""
    if not 0 < tolerance < 1 or not 0.5 <= confidence < 1 or budget_s <= 0 or target_s <= 0 or segment < 0:
        raise ABError("--speed-tol must be in (0, 1), --confidence in [0.5, 1), --budget and --repeat-s > 0, "
                      "--segment >= 0")
    fewest = min_rounds_for(confidence) * max(1, segment)
    if not fewest <= min_rounds <= max_rounds:
        raise ABError(f"--min-rounds must be at least {fewest} (the fewest rounds with a {100 * confidence:g}% "
                      f"interval over segments of {max(1, segment)}) and at most --max-rounds")
    try:
        top = Path(_git(Path(repo), "rev-parse", "--show-toplevel"))
    except ABError:
        raise ABError(f"{repo} is not inside a git repository; --rev compares commits of one") from None
    scratch = Path(tempfile.mkdtemp(prefix="vptbench-ab-"))
    sides = [Side("BASE", base, _commit(top, base), top), Side("HEAD", head, _commit(top, head or "HEAD"), top)]
    trees: List[Path] = []
    workers: List[Worker] = []
    try:
        _git(top, "worktree", "prune")
        for side in sides:
            if side.rev:  # a commit: its own worktree; the working tree is the checkout itself
                side.root = scratch / side.name.lower()
                _git(top, "worktree", "add", "--detach", "--quiet", str(side.root), side.commit)
                trees.append(side.root)
            if not (side.root / "bench").is_dir():
                raise ABError(f"{side.label} has no bench/ package: not a vptbench revision")
            side.python, side.env_note = environment_for(side.root, top, log=log)
        workers = [Worker(s, scratch / f"{s.name.lower()}.log") for s in sides]
        rng = random.Random(seed)
        setups: Dict[int, list] = {}
        for i in rng.sample((0, 1), 2):  # one after the other (kernel choices are measured), in random order
            w = workers[i]
            log(f"vptbench compare --rev: setting up {w.side.label}")
            adopt = [c["choices"] for c in setups[1 - i]] if setups and same_kernels else None
            setups[i] = w.ask(op="setup", overrides=overrides, multirun=multirun, adopt=adopt,
                              store=str(scratch / f"store-{w.side.name.lower()}"), target_s=target_s)["cells"]
        a_cells, b_cells = setups[0], setups[1]
        labels_a, labels_b = [c["label"] for c in a_cells], [c["label"] for c in b_cells]
        if labels_a != labels_b:
            raise ABError(f"the revisions compose different cells from these overrides (BASE: {len(labels_a)}, "
                          f"HEAD: {len(labels_b)}); compare cells both revisions know")
        result = ABResult(sides[0], sides[1], tolerance, confidence)
        for i, (a, b) in enumerate(zip(a_cells, b_cells)):
            cell = CellResult(a["label"], rows=_exact_rows(a["label"], a["record"], b["record"], mpjpe_tol),
                              paths=(a["path"], b["path"]))
            if a["speed"]:
                if a["iters"] != b["iters"]:  # both sides time the same number of forwards per repeat
                    iters = max(a["iters"], b["iters"])
                    a["iters"] = b["iters"] = iters
                    for w in workers:
                        w.ask(op="iters", cell=i, iters=iters)
                ta, tb, v, cell.seconds = _time_cell(tuple(workers), i, rng, tolerance, confidence, budget_s,
                                                     min_rounds, max_rounds, segment)
                cell.speed = v
                cell.rows.append(_speed_row(a["label"], ta, tb, a["batch_size"] * a["frames_out"] * a["iters"], v))
                log(f"[{i + 1}/{len(a_cells)}] {a['label']}: {v.describe()} ({cell.seconds:.0f} s): {v.verdict}")
            result.cells.append(cell)
        return result
    finally:
        for w in workers:
            w.close()
        for tree in trees:
            subprocess.run(["git", "-C", str(top), "worktree", "remove", "--force", str(tree)], capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)
