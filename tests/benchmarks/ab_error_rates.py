"""How often `vptbench compare --rev` cries wolf, and how often it catches a real 5 % / 10 % slowdown.

A benchmark, not a test (minutes of machine time): `python tests/benchmarks/ab_error_rates.py --out DIR`.

1. A temporary clone of this checkout's HEAD; in it, two more commits that make MixSTE slower by a real
   code change: K extra elementwise ops at the end of every `Block.forward` (`x = x + 0.0 * tanh(x)`,
   exact: outputs unchanged). K is calibrated in this process (the cell's timing copy with and without
   the ops, interleaved) to about 5 % and 10 %; each slowed commit's true slowdown is then measured by one
   long A/B against its parent.
2. Runs, interleaved by kind so the machine's drift spreads over all: BASE against itself (false alarms:
   any "regression"), against the 5 % commit and against the 10 % commit (detections: "regression"),
   each a fresh `run_ab` (new worktrees, new workers) with its own order seed.
3. DIR/runs.csv (one row per run) and DIR/summary.md (rates, time per A/B, the machine).
"""
from __future__ import annotations

import argparse
import csv
import math
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CELL = ["backbone=mixste", "preset=tiny", "metrics=[speed]", "speed.batch_size=64"]  # the quickstart's speed setting
ANCHOR = "        x = x + self.drop_path(self.mlp(self.norm2(x)))\n"


def _extra_ops(fraction: float) -> str:
    """Wasted work at the end of every block: tanh over `fraction` of the block's output, repeated, discarded
    (the outputs stay bit-identical; the cost grows with the elements)."""
    whole, part = int(fraction), fraction - int(fraction)
    lines = ["        torch.tanh(x)  # benchmark: a slower revision\n"] * whole
    lines += [f"        torch.tanh(x.reshape(-1)[: int({part:.4f} * x.numel())])  # benchmark: a slower revision\n"]
    return ANCHOR + "".join(lines)


def calibrate(target: float, rounds: int = 60) -> float:
    """How many block outputs' worth of wasted tanh per block slows the cell's timing copy by about `target`
    (measured here, in one process, both variants interleaved)."""
    import torch

    import backbones.layers as layers
    from bench.compose import compose_cells
    from bench.cell import build_model
    from bench.measure.allocator import keep_freed_memory
    from bench.measure.fastpath import forward_calls, timing_model

    keep_freed_memory()
    cfg = compose_cells(CELL, False)[0]
    torch.set_num_threads(cfg.speed.threads)
    model = build_model(cfg).eval()
    x = (torch.randn(64, model.num_frames, 17, 2),)
    run, x, _ = timing_model(model, x, "fp32", "cpu", forward_calls(model, x))
    plain = layers.Block.forward

    def slowed(k):
        def forward(self, x, need_weights=False):
            x, attn = plain(self, x, need_weights)
            for _ in range(k):
                torch.tanh(x)
            return x, attn
        return forward

    def once(k):
        layers.Block.forward = slowed(k) if k else plain
        t0 = time.perf_counter()
        with torch.inference_mode():
            run(*x)
        return time.perf_counter() - t0

    probe = 2
    once(0), once(probe)
    ratios = []
    for _ in range(rounds):
        pair = random.sample([0, probe], 2)
        t = {k: once(k) for k in pair}
        ratios.append(t[probe] / t[0])
    layers.Block.forward = plain
    per_op = (statistics.median(ratios) - 1) / probe
    return round(target / per_op, 3)


def make_clone(workdir: Path):
    clone = workdir / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    return clone, _git(clone, "rev-parse", "HEAD")


def _git(clone: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(clone), "-c", "user.name=bench", "-c", "user.email=bench@localhost", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


def commit_slowed(clone: Path, base: str, factor: float, name: str) -> str:
    """A commit on `base` whose blocks waste `factor` x their output's worth of tanh."""
    _git(clone, "checkout", "-q", base)
    layers = clone / "backbones" / "layers.py"
    original = layers.read_text()
    assert original.count(ANCHOR) == 1, "Block.forward changed: update ANCHOR"
    layers.write_text(original.replace(ANCHOR, _extra_ops(factor)))
    _git(clone, "commit", "-q", "-am", f"benchmark: wasted tanh x{factor} per block (~{name} slower)")
    commit = _git(clone, "rev-parse", "HEAD")
    _git(clone, "checkout", "-q", base)
    return commit


def true_slowdown(clone, base, commit, rounds):
    from bench.ab import run_ab

    return run_ab(str(clone), base, commit, CELL, False, budget_s=1e9, min_rounds=rounds, max_rounds=rounds,
                  seed=999, log=lambda m: None).cells[0].speed


def main() -> int:
    from bench.ab import run_ab

    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--budget", type=float, default=45.0)
    p.add_argument("--truth-rounds", type=int, default=150)
    p.add_argument("--self-pairs", type=int, default=0,
                   help="instead: N self A/Bs of 40 rounds each with segments of 5 and without, alternated (the "
                        "spread across worker pairs that segments remove); writes DIR/self_pairs.csv")
    a = p.parse_args()
    if a.self_pairs:
        return self_pairs(Path(a.out), a.self_pairs)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    quiet = lambda m: None  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        clone, base = make_clone(Path(tmp))
        commits, truth, factors = {"same": base}, {}, {}
        for name, target in (("5%", 0.05), ("10%", 0.10)):
            factors[name] = calibrate(target)
            for attempt in range(3):  # the in-process calibration is a first guess; the long A/B is the truth
                commits[name] = commit_slowed(clone, base, factors[name], name)
                truth[name] = true_slowdown(clone, base, commits[name], a.truth_rounds)
                print(f"{name}: tanh x{factors[name]} per block: {truth[name].describe()}", file=sys.stderr, flush=True)
                if abs(truth[name].ratio - 1 - target) <= 0.2 * target:
                    break
                factors[name] = round(factors[name] * target / max(truth[name].ratio - 1, 0.2 * target), 3)
        k5, k10 = factors["5%"], factors["10%"]
        rows = []
        for i in range(a.runs):
            for name in random.Random(i).sample(["same", "5%", "10%"], 3):
                t0 = time.perf_counter()
                r = run_ab(str(clone), commits["same"], commits[name], CELL, False, budget_s=a.budget, seed=i, log=quiet)
                c = r.cells[0]
                rows.append(dict(run=i, revision=name, verdict=c.speed.verdict, ratio=round(c.speed.ratio, 4),
                                 low=round(c.speed.low, 4) if c.speed.low else "", rounds=c.speed.rounds,
                                 high=round(c.speed.high, 4) if c.speed.high else "",
                                 timing_s=round(c.seconds, 1), total_s=round(time.perf_counter() - t0, 1)))
                print(rows[-1], file=sys.stderr, flush=True)
                with open(out / "runs.csv", "w", newline="") as f:  # rewritten after every run: a kill keeps them
                    w = csv.DictWriter(f, fieldnames=list(rows[0]))
                    w.writeheader()
                    w.writerows(rows)
    (out / "summary.md").write_text(summary(rows, truth, k5, k10, a))
    print((out / "summary.md").read_text())
    return 0


def self_pairs(out: Path, n: int, rounds: int = 40) -> int:
    """The same commit against itself, a fresh pair of workers each time, `rounds` rounds: how far apart pairs
    land (standard deviation of the log ratio across pairs) and how often a 95 % interval excludes 1, with the
    memory renewed every 5 rounds (segments) and never (segment 0)."""
    from bench.ab import run_ab

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clone, base = make_clone(Path(tmp))
        for i in range(2 * n):
            segment = 5 if i % 2 else 0
            v = run_ab(str(clone), base, base, CELL, False, budget_s=1e9, min_rounds=rounds, max_rounds=rounds,
                       seed=100 + i, segment=segment, log=lambda m: None).cells[0].speed
            rows.append(dict(pair=i, segment=segment, ratio=round(v.ratio, 4), low=round(v.low, 4), high=round(v.high, 4),
                             excludes_1=v.low > 1 or v.high < 1))
            print(rows[-1], file=sys.stderr, flush=True)
    with open(out / "self_pairs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    for segment in (0, 5):
        rs = [r for r in rows if r["segment"] == segment]
        logs = [math.log(r["ratio"]) for r in rs]
        print(f"segment {segment}: sd of the log ratio across {len(rs)} pairs {statistics.stdev(logs):.4f}, "
              f"mean {statistics.mean(logs):+.4f}, intervals excluding 1: {sum(r['excludes_1'] for r in rs)}/{len(rs)}")
    return 0


def summary(rows, truth, k5, k10, a) -> str:
    from bench.cell import environment

    env = environment("cpu")
    lines = [f"# A/B error rates: `vptbench compare --rev`, {len(rows) // 3} runs per revision", "",
             f"Machine: {env.get('cpu_name')} ({env.get('cpu_features')}), torch {env.get('torch_version')}, 2 threads. Cell: `{' '.join(CELL)}` "
             f"(tolerance 2 %, 95 % signed-rank interval over segments of 5 rounds, budget {a.budget:g} s of timing per cell, 30 rounds minimum).",
             "", "| revision | true slowdown (one long A/B) | regression | unchanged | faster | inconclusive | "
             "median timing s | median total s |", "|---|---|---|---|---|---|---|---|"]
    for name, k in (("same", 0), ("5%", k5), ("10%", k10)):
        rs = [r for r in rows if r["revision"] == name]
        count = {v: sum(r["verdict"] == v for r in rs) for v in ("regression", "unchanged", "faster", "inconclusive")}
        t = truth[name].describe() if name in truth else "none (the same commit)"
        label = "BASE itself" if name == "same" else f"{name} slower (wasted tanh over {k}x each block's output)"
        lines.append(f"| {label} | {t} | {count['regression']}/{len(rs)} | {count['unchanged']}/{len(rs)} | "
                     f"{count['faster']}/{len(rs)} | {count['inconclusive']}/{len(rs)} | "
                     f"{statistics.median(r['timing_s'] for r in rs):.0f} | {statistics.median(r['total_s'] for r in rs):.0f} |")
    lines += ["", f"Reproduce: `python tests/benchmarks/ab_error_rates.py --out DIR --runs {a.runs} --budget {a.budget:g}` "
              f"({platform.python_version()}); every run is in runs.csv."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
