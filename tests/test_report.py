"""Report tables and plots from small hand-written stores: which tables appear, the bold best value,
mean ± std over seeds, booktabs LaTeX, PNG + PDF plots; bad records and csv rows skipped with a warning."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from bench.records import MAX_RECORD_BYTES
from bench.report import build_tables, load_frame, read_results, write_report
from bench.report.plots import pareto_front
from bench.report.render import HIGHER, LOWER, best_mask, tex_escape
from tests.report_records import GRID, grid_records, record, write_store


def _tables(records):
    return {t.name: t for t in build_tables(load_frame(records))}


def test_all_tables_from_a_full_grid(tmp_path):
    recs = grid_records(seeds=(0, 1, 2))
    for b in (2, 4):  # the same cells timed at other batch sizes
        recs += [dict(r, key=f"{r['key']}b{b}", speed_batch=b, frames_per_s=r["frames_per_s"] * b ** 0.5)
                 for r in grid_records()[:2]]
    write_store(tmp_path / "s", recs)
    names = {p.name for p in write_report(str(tmp_path / "s"), str(tmp_path / "out"))}
    for kind in ("efficiency", "pruner_recoverer", "layer_tokens_gflops", "layer_tokens_mpjpe", "hierarchical"):
        assert {f"{kind}.md", f"{kind}.tex"} <= names
    for plot in ("pareto_flops_mpjpe", "throughput_vs_batch", "speedup_vs_flops_ratio",
                 "heatmap_layer_tokens_mixste_tiny_cluster_attention"):
        assert {f"{plot}.png", f"{plot}.pdf"} <= names
        assert (tmp_path / "out" / f"{plot}.png").read_bytes()[:4] == b"\x89PNG"
    csv = pd.read_csv(tmp_path / "out" / "results.csv")
    assert len(csv) == len(recs) and "env_torch_version" in csv


def test_tables_need_their_cells():
    only_base = _tables([record(), record(pruner="cluster", recoverer="attention", schedule=[(1, 9)])])
    assert set(only_base) == {"efficiency"}
    flops_only = [{k: v for k, v in r.items() if k not in ("mpjpe_mm", "p_mpjpe_mm")} for r in grid_records()]
    t = _tables(flops_only)
    assert "pruner_recoverer" not in t and "layer_tokens_mpjpe" not in t and "layer_tokens_gflops" in t
    assert "MPJPE" not in t["efficiency"].frame


def test_best_value_is_bold_in_markdown_and_latex():
    recs = grid_records()
    recs[4]["mpjpe_mm"] = 150.0  # uniform + interpolation 9@1: the most accurate cell
    t = _tables(recs)
    md, tex = t["efficiency"].markdown(), t["efficiency"].latex()
    row = next(l for l in md.splitlines() if "uniform + interpolation" in l)
    assert "**150.0**" in row and md.count("**150.0**") == 1
    assert "\\textbf{150.0}" in tex and "**" not in tex
    base = next(l for l in md.splitlines() if "| baseline" in l)
    assert "**9000.0**" not in base  # frames/s: higher is better, the baseline is the slowest
    assert all(s in tex for s in ("\\begin{tabular}", "\\toprule", "\\midrule", "\\bottomrule", "\\caption{"))
    assert tex.count("&") % tex.count("\\\\") == 0  # every row has the same number of cells
    grid = t["pruner_recoverer"].markdown()  # one best over the whole pruner x recoverer grid
    assert grid.count("**") == 2 and "**150.0**" in grid


def test_seeds_give_mean_std_and_n():
    t = _tables(grid_records(seeds=(0, 1, 2)))["efficiency"]
    md = t.markdown()
    base = next(l for l in md.splitlines() if "| baseline" in l)
    assert "161.0 ± 1.0" in base  # seeds 0, 1, 2 add 0, 1, 2 mm
    assert "seeds" in md and re.search(r"\|\s+3\s+\|", base)
    assert "$\\pm$" in t.latex()
    single = _tables(grid_records())["efficiency"].markdown()
    assert "±" not in single and "seeds" not in single


def test_deltas_against_the_same_backbone_baseline():
    t = _tables(grid_records())["efficiency"].frame
    row = t[(t["method"] == "cluster + attention") & (t["schedule (tokens@layer)"] == "9@1")].iloc[0]
    assert row["ΔFLOPs %"] == pytest.approx(-100 / 3)
    assert row["speed-up"] == pytest.approx(1.5)
    assert row["ΔMPJPE"] == pytest.approx(9.0)


def test_tex_escape_and_pareto_front():
    assert tex_escape("a_b 5% x→y ± Δ") == "a\\_b 5\\% x$\\rightarrow$y $\\pm$ $\\Delta$"
    x, y = pd.Series([1.0, 2.0, 3.0, 2.5]).to_numpy(), pd.Series([5.0, 3.0, 1.0, 4.0]).to_numpy()
    assert list(pareto_front(x, y)) == [0, 1, 2]


def test_grid_fixture_is_consistent():
    assert len({r["key"] for r in grid_records(seeds=(0, 1))}) == 2 * len(GRID)


def test_modes_are_separate_cells_not_seeds():
    recs = [record(), record(pruner="cluster", recoverer="interpolation", schedule=[(1, 9)], mpjpe_mm=170.0)]
    recs.append(dict(recs[1], key="zs", mode="zeroshot", mpjpe_mm=180.0))
    from bench.report.tables import efficiency_table

    eff = efficiency_table(load_frame(recs))
    rows = eff[eff["pruner"] == "cluster"].set_index("method")
    assert rows.loc["cluster + interpolation", "MPJPE"] == 170.0  # records without `mode` trained from scratch
    assert rows.loc["cluster + interpolation [zeroshot]", "MPJPE"] == 180.0
    assert (rows["seeds"] == 1).all()


def test_modes_table_pairs_each_seed_with_its_own_baseline():
    """finetune vs zeroshot side by side; Δ is the mean ± std over seeds of (pruned − baseline of the same
    seed), so a baseline seed spread of 10 mm that the pruned cells inherit cancels out."""
    recs = []
    for seed, base in ((0, 100.0), (1, 110.0), (2, 120.0)):
        recs.append(record(seed=seed, mpjpe_mm=base))
        sched = [(1, 9)]
        recs.append(dict(record("cluster", "interpolation", sched, seed, mpjpe_mm=base + 1.0 + seed), mode="finetune", key=f"f{seed}"))
        recs.append(dict(record("cluster", "interpolation", sched, seed, mpjpe_mm=base + 3.0), mode="zeroshot", key=f"z{seed}"))
    recs.append(dict(record("uniform", "attention", [(1, 9)], 0, mpjpe_mm=150.0), mode="finetune", key="u0"))
    assert "Δ ctrl finetune" not in _tables(recs)["modes"].frame                   # no control cells yet
    for seed, base in ((0, 100.0), (1, 110.0), (2, 120.0)):  # the control: keeps all 27 frames, same training
        recs.append(dict(record("uniform", "interpolation", [(1, 27)], seed, mpjpe_mm=base - 1.0), mode="finetune",
                         key=f"c{seed}"))
    tab = _tables(recs)["modes"]
    rows = tab.frame.set_index(["pruner", "recoverer"])
    cluster = rows.loc[("cluster", "interpolation")]
    assert cluster["finetune"] == pytest.approx(112.0) and cluster["finetune std"] == pytest.approx(11.0)
    assert cluster["Δ finetune"] == pytest.approx(2.0) and cluster["Δ finetune std"] == pytest.approx(1.0)
    assert cluster["Δ zeroshot"] == pytest.approx(3.0) and cluster["Δ zeroshot std"] == pytest.approx(0.0)
    assert cluster["n zeroshot"] == 3
    assert cluster["Δ ctrl finetune"] == pytest.approx(3.0) and cluster["Δ ctrl finetune std"] == pytest.approx(1.0)
    assert "Δ ctrl zeroshot" not in tab.frame                      # a zeroshot control is the baseline itself
    uniform = rows.loc[("uniform", "attention")]
    assert uniform["Δ finetune"] == pytest.approx(50.0) and pd.isna(uniform["zeroshot"])
    md = tab.markdown()
    assert "+2.0 ± 1.0" in md and "| 112.0 ± 11.0 " in md and "**109.0 ± 10.0**" in md and "MPJPE 110.0 ± 10.0 mm (n=3)" in md
    # one mode only: no such table
    assert "modes" not in _tables([r for r in recs if r.get("mode") != "zeroshot"])


def test_records_differing_beyond_the_seed_are_never_averaged():
    """Two runs of one cell with different training settings in one store: separate rows and a warning,
    while the seeds of one configuration are still averaged."""
    def rec(seed, steps, mpjpe):
        r = record(seed=seed, mpjpe_mm=mpjpe)
        return dict(r, key=f"{seed}-{steps}", config={"seed": seed, "train": {"steps": steps}})

    recs = [rec(0, 100, 150.0), rec(1, 100, 152.0), rec(0, 1600, 110.0)]
    df = load_frame(recs)
    from bench.report.frame import aggregate_seeds, mixed_variants
    from bench.report.tables import markdown_report

    agg = aggregate_seeds(df, ["mpjpe_mm"]).sort_values("mpjpe_mm")
    assert agg["mpjpe_mm"].tolist() == [110.0, 151.0] and agg["n_seeds"].tolist() == [1, 2]
    assert mixed_variants(df) == 1 and "**Warning:** 1 cell(s)" in markdown_report(df)
    assert mixed_variants(load_frame(recs[:2])) == 0 and "Warning" not in markdown_report(load_frame(recs[:2]))


def test_report_skips_bad_records_with_one_warning_each(tmp_path):
    """Bad record files planted among good ones: the report still exits 0 (in time: a FIFO must not block
    it, a link to /dev/zero not exhaust memory), tables hold the good records only, one warning per file."""
    recs = grid_records()[:3]
    store = write_store(tmp_path / "s", recs).root
    bad = {"str.json": dict(recs[0], key="bad1", gflops="abc"), "list.json": dict(recs[0], key="bad2", gflops=[1, 2]),
           "status.json": dict(recs[0], key="bad3", status=3), "neg.json": dict(recs[0], key="bad4", gflops=-1),
           "inf.json": dict(recs[0], key="bad5", gflops=float("inf"))}  # written as JSON `Infinity`
    for name, rec in bad.items():
        (store / name).write_text(json.dumps(rec))
    assert "Infinity" in (store / "inf.json").read_text()
    os.mkfifo(store / "x.json")
    (store / "y.json").symlink_to("/dev/zero")
    (store / "big.json").write_text(json.dumps(dict(recs[0], key="bad6", pad="x" * (MAX_RECORD_BYTES + 1))))
    proc = subprocess.run([sys.executable, "-c", "import sys; from bench.cli import main; "
                           f"sys.exit(main(['report', '--store', {str(store)!r}, '--out', {str(tmp_path / 'out')!r}]))"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    warnings = [l for l in proc.stderr.splitlines() if str(store) in l]
    assert len(warnings) == len(bad) + 3, proc.stderr
    for name in [*bad, "x.json", "y.json", "big.json"]:
        assert sum(str(store / name) in l for l in warnings) == 1, (name, proc.stderr)
    csv = pd.read_csv(tmp_path / "out" / "results.csv")
    assert sorted(csv["key"]) == sorted(r["key"] for r in recs)
    assert csv["gflops"].between(0, 1).all()
    for f in (tmp_path / "out").glob("*.*[dvx]"):  # md, csv, tex
        text = f.read_text()
        assert not any(s in text for s in ("abc", "inf", "Infinity", "bad", "-1.000", "[1, 2]")), f.name


def test_bad_csv_rows_are_skipped_with_their_row_number(tmp_path, caplog):
    write_store(tmp_path / "s", grid_records())
    write_report(str(tmp_path / "s"), str(tmp_path / "rep"))
    df = pd.read_csv(tmp_path / "rep" / "results.csv", dtype=str)
    df.loc[1, "gflops"], df.loc[2, "status"], df.loc[3, "frames"], df.loc[4, "gflops"] = "abc", "3", "x", "-inf"
    df.to_csv(tmp_path / "bad.csv", index=False)
    good = read_results(str(tmp_path / "bad.csv"))
    assert len(good) == len(df) - 4 and good["gflops"].dtype == float and good["frames"].dtype == int
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(lines) == 4, lines
    for row, why in ((2, "gflops is 'abc' (str)"), (3, "status is '3' (str)"), (4, "frames is 'x' (str)"),
                     (5, "gflops is -inf (float)")):
        assert any(f"row {row} of {tmp_path / 'bad.csv'} (line {row + 1}): {why}" in l for l in lines), (row, lines)
    names = {p.name for p in write_report(str(tmp_path / "bad.csv"), str(tmp_path / "rep2"))}
    assert "efficiency.md" in names and "abc" not in (tmp_path / "rep2" / "results.md").read_text()


def test_best_value_ignores_non_finite_values():
    frame = pd.DataFrame({"GFLOPs": [1.0, -np.inf, np.nan, 0.5], "frames/s": [3.0, np.inf, 2.0, 2.0]})
    mask = best_mask(frame, {"GFLOPs": LOWER, "frames/s": HIGHER})
    assert mask["GFLOPs"].tolist() == [False, False, False, True]
    assert mask["frames/s"].tolist() == [True, False, False, False]
    assert best_mask(frame, {"GFLOPs": LOWER, "frames/s": LOWER}, whole_table=True).values.sum() == 1


def test_report_notes_cells_timed_in_an_emulated_precision():
    from bench.report.tables import markdown_report

    native = "bf16 weights and activations, oneDNN linear, attention sdpa 2/2 shapes"
    emulated = ("bf16 weights and activations, emulated (this CPU (AVX2) has no bf16 arithmetic: torch's own "
                "kernels, widened to fp32), aten linear, attention sdpa 2/2 shapes")
    recs = [record(speed_path=native), record(pruner="cluster", recoverer="attention", schedule=[(1, 9)],
                                              speed_path=emulated)]
    assert "emulated precision" not in markdown_report(load_frame(recs[:1]))
    assert "**Note:** 1 cell(s) were timed in an emulated precision" in markdown_report(load_frame(recs))
