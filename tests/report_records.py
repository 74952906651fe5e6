"""Small results stores written record by record (no model runs), shared by the report and compare tests."""
from __future__ import annotations

from typing import Any, Dict, List

from bench.store import ResultStore, cell_key

BASE = dict(backbone="mixste", preset="tiny", frames=27, depth=4, pipeline="seq2seq", data="realmocap",
            data_label="", experiment=None, status="ok", params_m=0.070, speed_batch=1)


def record(pruner="none", recoverer="none", schedule=(), seed=0, **metrics) -> Dict[str, Any]:
    """One ok record; FLOPs fall and MPJPE rises with the tokens pruned unless given."""
    schedule = [list(s) for s in schedule]
    kept = min((k for _, k in schedule), default=27)
    ident = dict(pruner=pruner, recoverer=recoverer, schedule=schedule, seed=seed)
    rec = dict(BASE, key=cell_key(ident), **ident, gflops=0.06 * (0.5 + 0.5 * kept / 27),
               gflops_total=0.07 * (0.5 + 0.5 * kept / 27), frames_per_s=9000 * 27 / (13.5 + kept / 2),
               speed_cv=0.02, mpjpe_mm=160 + (27 - kept) * 0.5 + seed, p_mpjpe_mm=120 + (27 - kept) * 0.3 + seed,
               env={"torch_version": "2.13.0"})
    # the recoverer and pruner move accuracy a little, so a table has one best cell
    rec["mpjpe_mm"] += {"interpolation": -1.0}.get(recoverer, 0) + {"uniform": 2.0}.get(pruner, 0)
    rec.update(metrics)
    return rec


GRID = [dict(), dict(pruner="cluster", recoverer="attention", schedule=[(1, 9)]),
        dict(pruner="cluster", recoverer="interpolation", schedule=[(1, 9)]),
        dict(pruner="uniform", recoverer="attention", schedule=[(1, 9)]),
        dict(pruner="uniform", recoverer="interpolation", schedule=[(1, 9)]),
        dict(pruner="cluster", recoverer="attention", schedule=[(1, 18), (2, 9)]),
        dict(pruner="cluster", recoverer="attention", schedule=[(2, 9)]),
        dict(pruner="cluster", recoverer="attention", schedule=[(1, 18)]),
        dict(pruner="cluster", recoverer="attention", schedule=[(2, 18)])]


def write_store(root, records: List[Dict[str, Any]]) -> ResultStore:
    store = ResultStore(root)
    for rec in records:
        store.put(rec)
    return store


def grid_records(seeds=(0,)) -> List[Dict[str, Any]]:
    return [record(seed=s, **cell) for s in seeds for cell in GRID]
