"""The cells of one `vptbench run`, followed through the results store.

Jobs may run in this process, in joblib workers or on SLURM nodes, so nothing is learnt from their
return values: progress and the final summary come from the store, which every launcher shares
(a shared filesystem for SLURM). A cell is complete when its record is `ok` and holds every metric
the command asked for; a cell with a failed record, or none at all (its job was killed), fails the
command.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import replace
from typing import Dict, Iterator, List, Tuple

from .cell import (METRIC_FIELDS, build_model, cell_label, has_metric, load_cell_data, load_weights,
                   needs_training_data, run_cell)
from .config import Config
from .devices import check_device_exists, device_kind
from .store import ResultStore, cell_key

__all__ = ["Grid"]

POLL_S = 0.5  # how often the progress bar looks at the store


def _complete(cfg: Config, rec: Dict | None) -> bool:
    return bool(rec) and rec.get("status") == "ok" and all(has_metric(rec, m) for m in cfg.metrics)


class Grid:
    def __init__(self, cells: List[Config]):
        # the unpruned baseline collapses several overrides to one cell: count and check it once
        self.cells: Dict[Tuple[str, str], Config] = {}
        for cfg in cells:
            self.cells.setdefault((cfg.store, cell_key(cfg.cell_identity())), cfg)

    def __len__(self) -> int:
        return len(self.cells)

    def _record(self, store: str, key: str) -> Dict | None:
        return ResultStore(store).get(key)

    def preflight(self, check_devices: bool = True) -> None:
        """Before any compute, fail in one line (ValueError) on a device this machine lacks or a timing
        precision no kernel of its CPU runs (neither checked when the cells run elsewhere, e.g. on SLURM
        nodes), a store that cannot be written or data that cannot be loaded; remove temp files left by
        killed writers."""
        if check_devices:
            for name in sorted({cfg.device for cfg in self.cells.values()}):
                check_device_exists(name)
            self.check_precisions()
        self.check_data()
        self.check_weights()
        for store in sorted({s for s, _ in self.cells}):
            ResultStore(store).prepare()
        seen = set()
        for cfg in self.cells.values():  # wrong shapes, NaNs, malformed files: one line naming the fix
            need = (repr(cfg.data), needs_training_data(cfg))
            if "accuracy" in cfg.metrics and need not in seen:
                seen.add(need)
                load_cell_data(cfg.data, need[1])

    def check_precisions(self) -> None:
        """Timing and evaluation precisions of the CPU cells that this CPU cannot run at all (capability
        probes)."""
        cpu = [cfg for cfg in self.cells.values() if device_kind(cfg.device) == "cpu"]
        wanted = {("speed.precision", cfg.speed.precision) for cfg in cpu if "speed" in cfg.metrics} | \
                 {("eval.precision", cfg.eval.precision) for cfg in cpu if "accuracy" in cfg.metrics}
        wanted = {(setting, p) for setting, p in wanted if p != "fp32"}
        if wanted:
            from .measure.capability import check_precision

            for setting, precision in sorted(wanted):
                check_precision(precision, setting)

    def check_weights(self) -> None:
        """Each cell's `weights=` file read (never running code it carries) and fitted to the cell's model:
        a file of another family, preset, frame count or recoverer is one line here, before compute."""
        for cfg in self.cells.values():
            if cfg.weights:
                load_weights(cfg, build_model(cfg))

    def check_data(self) -> None:
        """The data configs of the accuracy cells, without loading them: names, paths, files present."""
        from .data import check_data

        for cfg in self.cells.values():
            if "accuracy" in cfg.metrics:
                check_data(cfg.data.name, dict(cfg.data.paths), cfg.data.noise_px)

    def incomplete(self) -> List[Tuple[str, str]]:
        """Cells this run has to compute (all of them with rerun)."""
        return [sk for sk, cfg in self.cells.items() if cfg.rerun or not _complete(cfg, self._record(*sk))]

    def stored_records(self) -> Iterator[Dict]:
        for (store, key) in self.cells:
            yield dict(self._record(store, key) or {"key": key, "status": "missing"}, skipped=True)

    def devices(self) -> set:
        return {cfg.device for cfg in self.cells.values()}

    def has_speed(self) -> bool:
        return any("speed" in cfg.metrics for cfg in self.cells.values())

    def metrics_without_speed(self) -> List[str]:
        wanted = {m for cfg in self.cells.values() for m in cfg.metrics} - {"speed"}
        return [m for m in METRIC_FIELDS if m in wanted]

    def run_here(self) -> Iterator[Dict]:
        """Run every cell in this process, in grid order (finished ones are skipped by `run_cell`)."""
        for cfg in self.cells.values():
            yield run_cell(cfg)

    def run_speed_serially(self) -> Iterator[Dict]:
        """Time the speed cells one at a time in this process (after a parallel pass). A cell whose other
        metrics failed in that pass keeps its failed record: timing it would overwrite the failure."""
        for (store, key), cfg in self.cells.items():
            rec = self._record(store, key)
            if "speed" in cfg.metrics and not (rec and rec.get("status") == "failed"):
                yield run_cell(replace(cfg, metrics=["speed"]))

    @contextlib.contextmanager
    def progress(self):
        """A tqdm bar on stderr over the grid's cells: done / skipped / failed, read from the store."""
        from tqdm import tqdm

        pending = {}
        skipped = 0
        for (store, key), cfg in self.cells.items():
            rec = self._record(store, key)
            if not cfg.rerun and _complete(cfg, rec):
                skipped += 1
            else:
                pending[(store, key)] = ResultStore(store).mtime(key)
        counts = {"done": 0, "skipped": skipped, "failed": 0}
        bar = tqdm(total=len(self), initial=skipped, desc="cells", unit="cell", dynamic_ncols=True,
                   mininterval=POLL_S)
        bar.set_postfix(counts, refresh=True)
        stop = threading.Event()

        def poll() -> None:
            for (store, key), seen in list(pending.items()):
                now = ResultStore(store).mtime(key)
                if now == seen:
                    continue
                pending[(store, key)] = now
                rec = self._record(store, key)
                outcome = "done" if _complete(self.cells[store, key], rec) else (
                    "failed" if rec and rec.get("status") != "ok" else None)
                if outcome:
                    del pending[(store, key)]
                    counts[outcome] += 1
                    bar.update(1)
                    bar.set_postfix(counts, refresh=True)

        def loop() -> None:
            while not stop.wait(POLL_S):
                poll()

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield counts
        finally:
            stop.set()
            thread.join()
            poll()
            bar.close()

    def skipped_speed(self) -> List[str]:
        """One line per cell whose timing was skipped (out of memory at its batch size): not a failure."""
        out = []
        for (store, key), cfg in self.cells.items():
            rec = self._record(store, key)
            if rec and rec.get("status") == "ok" and "speed" in cfg.metrics and rec.get("speed_skipped"):
                out.append(f"{key} ({cell_label(cfg)}): {rec['speed_skipped']}")
        return out

    def summary(self) -> List[str]:
        """One line per cell that is not complete in the store."""
        out = []
        for (store, key), cfg in self.cells.items():
            rec = self._record(store, key)
            if _complete(cfg, rec):
                continue
            if rec is None:
                why = "no record (its job was killed or crashed before writing; see the job's log)"
            elif rec.get("status") != "ok":
                why = rec.get("error") or "failed"
            else:
                why = "record lacks metrics " + ", ".join(m for m in cfg.metrics if not has_metric(rec, m))
            out.append(f"{key} ({cell_label(cfg)}): {why}")
        return out
