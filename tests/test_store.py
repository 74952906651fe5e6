"""Results store: stable keys, atomic records, foreign files skipped; the record schema, and record files
that break it (or are no record: a FIFO, a link to a device, a huge file) skipped with one warning each."""
import json
import os
import signal
from pathlib import Path

import pytest

from bench.records import MAX_RECORD_BYTES, METRICS, REQUIRED, STORE_REQUIRED, record_problem
from bench.store import ResultStore, cell_key


def test_key_is_stable_and_order_independent():
    assert cell_key({"a": 1, "b": [1, 2]}) == cell_key({"b": [1, 2], "a": 1})
    assert cell_key({"a": 1}) != cell_key({"a": 2})


def test_put_get_and_skip_foreign(tmp_path, caplog):
    store = ResultStore(tmp_path / "s")
    store.put({"key": "k1", "status": "ok", "x": 1.5})
    (tmp_path / "s" / "torn.json").write_text('{"key": "k2", "sta')
    (tmp_path / "s" / "foreign.json").write_text(json.dumps([1, 2, 3]))
    assert store.get("k1")["x"] == 1.5
    assert store.get("missing") is None
    assert [r["key"] for r in store.records()] == ["k1"]
    assert "torn.json" in caplog.text and "foreign.json" in caplog.text
    assert not list((tmp_path / "s").glob(".tmp-*"))  # no temp file left behind


def test_records_are_readable_by_others_and_temp_files_hidden(tmp_path):
    store = ResultStore(tmp_path)
    path = store.put({"key": "k1", "status": "ok"})
    assert path.stat().st_mode & 0o044  # not mkstemp's 0600: a shared store is read by others
    assert ResultStore._temp_prefix().startswith(".tmp-")
    (tmp_path / f"{ResultStore._temp_prefix()}x.json").write_text('{"key": "k9", "status": "ok"}')
    assert [r["key"] for r in store.records()] == ["k1"]


# --- the record schema and defensive reading ------------------------------------------------------

GOOD = {"key": "k1", "status": "ok", "backbone": "mixste", "preset": "tiny", "pipeline": "seq2seq", "pruner": "none",
        "recoverer": "none", "data": "realmocap", "frames": 27, "depth": 4, "seed": 0, "schedule": [[1, 9]],
        "params_m": 0.07, "gflops": 0.03, "gflops_total": None, "mpjpe_mm": float("nan"),
        "per_action_mpjpe_mm": {"Walking": 150.0}, "config": {}, "env": {}}


def test_a_valid_record_has_no_problem():
    assert record_problem(GOOD) is None
    assert record_problem({k: v for k, v in GOOD.items() if k not in ("depth", "gflops", "config")}) is None
    assert record_problem(dict(GOOD, mode="zeroshot", status="failed", error="RuntimeError: boom")) is None


@pytest.mark.parametrize("change,problem", [
    ({"gflops": "abc"}, "gflops is 'abc' (str), must be a finite number >= 0"),
    ({"gflops": [1, 2]}, "gflops is [1, 2] (list), must be a finite number >= 0"),
    ({"gflops": True}, "gflops is True (bool), must be a finite number >= 0"),
    ({"gflops": -1}, "gflops is -1 (int), must be a finite number >= 0"),
    ({"mpjpe_mm": float("inf")}, "mpjpe_mm is inf (float), must be a finite number >= 0"),
    ({"frames_per_s": 0.0}, "frames_per_s is 0.0 (float), must be a finite number > 0"),
    ({"status": 3}, "status is 3 (int), must be 'ok' or 'failed'"),
    ({"key": ""}, "key is '' (str), must be a non-empty string"),
    ({"frames": 0}, "frames is 0 (int), must be an integer >= 1"),
    ({"seed": 1.0}, "seed is 1.0 (float), must be an integer >= 0"),
    ({"mode": 3}, "mode is 3 (int), must be a string"),
    ({"schedule": [[1]]}, "schedule is [[1]] (list), must be a list of [layer, tokens] integer pairs"),
    ({"per_action_mpjpe_mm": {"Walking": "x"}}, "per_action_mpjpe_mm is {'Walking': 'x'} (dict), must be an object"),
    ({"env": [1]}, "env is [1] (list), must be an object"),
    ({"backbone": None}, "backbone is None (NoneType), must be a string"),
])
def test_record_problems_are_named(change, problem):
    assert record_problem(dict(GOOD, **change)).startswith(problem)


def test_missing_field_and_huge_values_are_short():
    assert record_problem({k: v for k, v in GOOD.items() if k != "pruner"}) == "pruner is missing"
    assert record_problem({"key": "k", "status": "ok"}, STORE_REQUIRED) is None  # the store needs no more
    assert record_problem({"key": "k", "status": "ok", "gflops": "x"}, STORE_REQUIRED).startswith("gflops is 'x'")
    assert len(record_problem(dict(GOOD, gflops=list(range(10 ** 5))))) < 120
    assert record_problem([1, 2]) == "the record is [1, 2] (list), must be a JSON object"


def test_schema_knows_every_metric_a_cell_writes():
    from bench.cell import METRIC_FIELDS  # imports torch: the schema itself must not
    from bench.measure.conventions import CONVENTIONS

    grouped = {f for fields in METRIC_FIELDS.values() for f in fields}
    # the flops metric also writes each third-party counter's figure (paper and total are gflops/gflops_total)
    counters = {f"{c.key}_g{c.unit.lower()}" for c in CONVENTIONS if c.key not in ("paper", "total")}
    # a pruned cell's speed-up over its baseline timed in the same run (baselines have none)
    assert set(METRICS) == grouped | counters | {"speedup_paired"}


@pytest.fixture
def alarm():
    """A read that blocks (a FIFO) fails the test instead of hanging it."""
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("reading the store blocked"))
    signal.alarm(30)
    yield
    signal.alarm(0)


def _plant(root: Path) -> dict:
    """Bad files named like records; returns file name -> what the warning must say."""
    bad = {"abc.json": dict(GOOD, key="abc", gflops="abc"), "neg.json": dict(GOOD, key="neg", gflops=-1),
           "status.json": dict(GOOD, key="status", status=3)}
    for name, rec in bad.items():
        (root / name).write_text(json.dumps(rec))
    (root / "inf.json").write_text(json.dumps(dict(GOOD, key="inf", gflops=float("inf"))))  # JSON `Infinity`
    os.mkfifo(root / "x.json")
    (root / "y.json").symlink_to("/dev/zero")
    with open(root / "big.json", "wb") as f:
        f.truncate(MAX_RECORD_BYTES + 1)
    return {"abc.json": "gflops is 'abc'", "neg.json": "gflops is -1", "status.json": "status is 3",
            "inf.json": "gflops is inf", "x.json": "a FIFO", "y.json": "a character device",
            "big.json": "larger than a record can be"}


def test_bad_files_are_skipped_with_one_warning_each(tmp_path, caplog, alarm):
    store = ResultStore(tmp_path)
    store.put(GOOD)
    expect = _plant(tmp_path)
    for _ in range(2):  # read twice: still one warning per file
        assert [r["key"] for r in store.records()] == ["k1"]
        assert all(store.get(name[:-5]) is None for name in expect)  # a bad record is absent: recomputed
    assert store.get("k1")["gflops"] == 0.03
    store.put({"key": "bare", "status": "ok"})  # a store record, but no cell a table can place
    assert [r["key"] for r in store.records(required=REQUIRED)] == ["k1"]
    expect["bare.json"] = "backbone is missing"
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(lines) == len(expect), lines
    for name, why in expect.items():
        (line,) = [l for l in lines if str(tmp_path / name) in l]
        assert why in line, line
