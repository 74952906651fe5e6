"""Results store: stable keys, atomic records, foreign files skipped."""
import json

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
