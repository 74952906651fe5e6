"""Every counting convention on one cell (`bench.measure.conventions`, `vptbench flops`, the
flops_conventions table), and agreement with the counters run on the official code."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from backbones import create, create_hourglass
from bench import cli
from bench.measure import conventions
from bench.measure.conventions import CONVENTIONS, count_conventions

EXTRA = all(importlib.util.find_spec(m) for m in ("thop", "ptflops", "torchprofile"))
needs_extra = pytest.mark.skipif(not EXTRA, reason="the FLOP counters are an extra: pip install -e '.[flops]'")

# Read once from the official MixSTE (NationalGAILab/HoT model/mixste/mixste.py, 243 frames, dim 512, depth 8,
# batch 1), with the pinned counters: thop 0.1.1 profile, ptflops 0.7.5 (pytorch backend), torchprofile 0.1.0.
OFFICIAL_MIXSTE_MACS = {"thop": 139_038_488_064, "ptflops": 139_101_952_617, "torchprofile": 147_595_011_920}
# torchprofile also counts elementwise multiplies: the official code scales each temporal score matrix
# explicitly (17 joints x 8 heads x 243 x 243 per layer, 8 layers) where ours folds the scale into SDPA
OFFICIAL_SCORE_SCALING_MACS = 17 * 8 * 243 * 243 * 8


@pytest.fixture(scope="module")
def paper_mixste():
    torch.manual_seed(0)
    return create("mixste").eval(), (torch.randn(1, 243, 17, 2),)


@needs_extra
@pytest.mark.slow
@pytest.mark.parametrize("counter", ["thop", "ptflops"])
def test_module_counters_see_our_mixste_as_the_official_one(paper_mixste, counter):
    model, x = paper_mixste
    assert conventions.THIRD_PARTY[counter](model, x) == OFFICIAL_MIXSTE_MACS[counter]


@needs_extra
@pytest.mark.slow
def test_torchprofile_differs_by_the_official_score_scaling_only(paper_mixste):
    model, x = paper_mixste
    ours = conventions.THIRD_PARTY["torchprofile"](model, x)
    gap = OFFICIAL_MIXSTE_MACS["torchprofile"] - ours  # 64_245_376 measured: the scaling, plus 64 MACs of scalars
    assert 0 <= gap - OFFICIAL_SCORE_SCALING_MACS <= 64, gap


@needs_extra
@pytest.mark.parametrize("pruner,recoverer", [("none", "none"), ("cluster", "attention"), ("merge", "unmerge"),
                                              ("dct", "idct"), ("random", "interpolation")])
def test_every_convention_counts_every_strategy(pruner, recoverer):
    model = create_hourglass("mixste", "tiny", pruner, recoverer, [] if pruner == "none" else [[1, 9]])
    counts = count_conventions(model, (torch.randn(1, 27, 17, 2),), frames_out=27)
    assert counts.missing == [] and set(counts.giga) == {c.key for c in CONVENTIONS}
    g = counts.giga
    assert all(v > 0 for v in g.values()), g
    # FLOPs = 2 x MACs: the MAC counters sit near half the FLOP counts; totals count more than Linear alone
    assert 0.4 * g["paper"] < g["thop"] <= g["fvcore"] < 0.7 * g["total"]
    assert g["total"] > g["paper"] and g["flopcounter"] > g["paper"]
    assert counts.per_frame("paper") == pytest.approx(g["paper"] / 27)


def test_a_missing_counter_is_named_never_zero(monkeypatch, capsys):
    def absent(model, inputs):
        raise ImportError("No module named 'thop'")

    monkeypatch.setitem(conventions.THIRD_PARTY, "thop", absent)
    counts = count_conventions(create_hourglass("mixste", "tiny"), (torch.randn(1, 27, 17, 2),), frames_out=27)
    assert counts.giga["thop"] is None and counts.missing == ["thop"]
    assert cli.main(["flops", "preset=tiny"]) == 0
    out = capsys.readouterr().out
    assert "| thop 0.1.1 profile | MACs | module hooks: nn.Linear, norms, activations | not installed: pip install -e '.[flops]'" in out


@needs_extra
def test_flops_command_prints_one_table(capsys):
    assert cli.main(["flops", "model=hot_mixste", "preset=tiny"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "counter" not in line]
    assert len(rows) == len(CONVENTIONS)
    assert "9 frame" not in out and "one clip of 27 frames in, 27 frame(s) out" in out
    assert all("not installed" not in r for r in rows)


@needs_extra
@pytest.mark.slow
def test_hot_fig1_report_has_the_flops_conventions_table(tmp_path, capsys):
    store = tmp_path / "store"
    assert cli.main(["run", "-m", "experiment=hot_fig1", "preset=tiny", "metrics=[params,flops]", f"store={store}"]) == 0
    assert cli.main(["report", "--store", str(store), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "flops_conventions.md").read_text()
    assert md.count("### Computation under every counter") == 5  # one per backbone
    rows = [line.split("|")[4:-1] for line in md.splitlines() if line.startswith("| ") and "method" not in line]
    assert rows and all(float(cell) > 0 for row in rows for cell in row)  # every counter counted every model


def test_a_record_from_before_the_counters_gets_them_on_the_next_run(tmp_path):
    """A store written before the convention fields existed: re-running the grid counts them into the
    records (a FLOPs pass, cheap) and keeps every other metric; afterwards the cells are complete."""
    import json

    from bench.cell import has_metric

    store = tmp_path / "store"
    args = ["run", "preset=tiny", "metrics=[params,flops]", f"store={store}"]
    assert cli.main(args) == 0
    (path,) = store.glob("*.json")
    rec = json.loads(path.read_text())
    assert has_metric(rec, "flops") and "flops_counters_missing" in rec
    old = {k: v for k, v in rec.items() if not k.endswith(("_gmacs", "_gflops")) and k != "flops_counters_missing"}
    old["params_m"] = 123.0  # marks the record: a full rerun would overwrite it
    path.write_text(json.dumps(old))
    assert not has_metric(old, "flops")  # gflops alone is not the whole metric any more
    assert cli.main(args) == 0
    new = json.loads(path.read_text())
    assert new["params_m"] == 123.0 and "flops_counters_missing" in new and new["fvcore_gmacs"] > 0
    assert new["flopcounter_gflops"] == pytest.approx(rec["flopcounter_gflops"])


@needs_extra
def test_a_counter_installed_since_the_record_completes_it():
    from bench.cell import has_metric

    rec = {"gflops": 1.0, "gflops_total": 1.2, "flops_counters_missing": []}
    assert has_metric(rec, "flops")
    # written where thop was not installed: complete there, incomplete here where it is
    assert not has_metric(dict(rec, thop_gmacs=None, flops_counters_missing=["thop"]), "flops")


def test_rerun_recomputes_the_metrics_asked_for_and_keeps_the_others(tmp_path):
    """`rerun=true metrics=[flops]` on a cell that also has params: the FLOPs are counted again, the params
    stay as they were (re-timing a finished grid must not throw its accuracy away)."""
    import json

    store = tmp_path / "store"
    assert cli.main(["run", "preset=tiny", "metrics=[params,flops]", f"store={store}"]) == 0
    (path,) = store.glob("*.json")
    rec = json.loads(path.read_text())
    path.write_text(json.dumps(dict(rec, params_m=123.0, gflops=9.0)))
    assert cli.main(["run", "preset=tiny", "metrics=[flops]", "rerun=true", f"store={store}"]) == 0
    new = json.loads(path.read_text())
    assert new["params_m"] == 123.0 and new["gflops"] == pytest.approx(rec["gflops"])
