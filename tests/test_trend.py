"""The trend page (`vptbench history report`): one self-contained HTML file with a plot per cell x metric, steps
marked, machines as separate series, PNGs beside it; loaded in a real headless Chromium, which must draw every
plot with no console error and no network request."""
from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess

import pytest

from bench.history import add_records
from test_cli import vptbench
from test_history import _measured, project  # noqa: F401  (the fixture: a git repository and a real results.csv)

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture(scope="module")
def trend(project, tmp_path_factory):  # noqa: F811
    """A history of 6 commits on two machines: frames/s drops 20 % at commit 4 on the first machine, FLOPs
    grow at commit 5 (both machines), and the trend page written from it."""
    import pandas as pd

    root = tmp_path_factory.mktemp("trend")
    db = root / "h.sqlite"
    gflops0 = float(pd.read_csv(project["csv"])["gflops"].iloc[0])
    for i in (5, 2, 0, 3, 1, 4):
        fps = [100.0, 101.0, 99.0, 100.5, 80.0, 79.5][i]
        flops = gflops0 * (1.2 if i == 5 else 1.0)
        add_records(str(_measured(project, i, fps, flops)), str(db), repo=str(project["repo"]))
        add_records(str(_measured(project, i, 50.0, flops, cpu="Other CPU")), str(db), repo=str(project["repo"]))
    out = root / "page"
    proc = vptbench("history", "report", "--db", str(db), "--out", str(out), "--accepted", str(root / "none.csv"))
    return dict(db=db, out=out, proc=proc, commits=project["commits"])


def test_the_page_is_one_self_contained_file_with_a_plot_per_cell_and_metric(trend):
    page = (trend["out"] / "index.html").read_text()
    assert "4 plot(s)" in trend["proc"].stderr and "4 PNG(s)" in trend["proc"].stderr
    # nothing fetched when opened: no external script, stylesheet, image or font
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)\s*=", page)
    assert "@import" not in page and "url(http" not in page
    assert page.count('class="plotly-graph-div"') == 4  # params_m, gflops, gflops_total, frames_per_s of the one cell
    assert json.loads(re.search(r'id="vptbench-summary">(.*?)</script>', page).group(1)) == \
        dict(plots=4, steps=3, regressions=3)  # frames/s on one machine; FLOPs on both
    c = trend["commits"]
    assert f"<code>{c[4][:12]}</code>" in page and f"<code>{c[5][:12]}</code>" in page  # the commits that stepped
    assert "Other CPU" in page  # the second machine's fingerprint is listed
    pngs = sorted((trend["out"] / "png").glob("*.png"))
    assert len(pngs) == 4 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000 for p in pngs)
    for p in pngs:  # every plot links its PNG
        assert f'href="png/{p.name}"' in page


def test_report_input_problems_are_one_line(trend, tmp_path):
    empty = tmp_path / "empty.sqlite"
    with sqlite3.connect(empty) as con:
        con.executescript("CREATE TABLE points (cell TEXT NOT NULL, label TEXT NOT NULL, metric TEXT NOT NULL, "
                          "machine TEXT NOT NULL, commit_hash TEXT NOT NULL, value REAL NOT NULL, measured_at TEXT NOT NULL);"
                          "CREATE TABLE commits (hash TEXT PRIMARY KEY, depth INTEGER NOT NULL, time INTEGER NOT NULL, subject TEXT NOT NULL);"
                          "CREATE TABLE machines (id TEXT PRIMARY KEY, description TEXT NOT NULL);")
    for db, needle in [(tmp_path / "none.sqlite", "no history at"), (empty, "holds no measurements yet")]:
        proc = vptbench("history", "report", "--db", str(db), "--out", str(tmp_path / "p"), check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr
    assert not (tmp_path / "p" / "index.html").exists()


def test_what_a_history_file_holds_is_text_never_markup_or_a_path(trend, tmp_path):
    db = tmp_path / "hostile.sqlite"
    db.write_bytes(trend["db"].read_bytes())
    with sqlite3.connect(db) as con:
        con.execute("UPDATE points SET cell = '../../evil\"<b>', label = '<img src=x onerror=alert(1)>'")
        con.execute("UPDATE machines SET description = '<script>alert(2)</script>'")
    vptbench("history", "report", "--db", str(db), "--out", str(tmp_path / "page"))
    page = (tmp_path / "page" / "index.html").read_text()
    assert "<img src=x" not in page and "<script>alert(2)" not in page and "&lt;img src=x" in page
    assert sorted(p.parent for p in tmp_path.rglob("*.png")) == [tmp_path / "page" / "png"] * 4


def _browser():
    return next((b for b in map(shutil.which, BROWSERS) if b), None)


def load_in_browser(page, tmp_path, screenshot=None):
    """(DOM after the page's scripts ran, console messages) from headless Chromium, every host name unresolvable
    so that any network request fails (and shows as a console error)."""
    args = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}", "--host-resolver-rules=MAP * ~NOTFOUND",
            "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000"]
    run = lambda extra: subprocess.run(args + extra + [page.as_uri()], capture_output=True, text=True,  # noqa: E731
                                       timeout=180)
    proc = run(["--dump-dom"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    if screenshot:
        shot = run([f"--screenshot={screenshot}", "--window-size=1200,1600", "--hide-scrollbars"])
        assert shot.returncode == 0, shot.stderr[-2000:]
    return proc.stdout, console


# CI (.ci/run, after .ci/browser installed Chromium) sets VPTBENCH_REQUIRE_BROWSER: there the test must run
needs_browser = pytest.mark.skipif(_browser() is None and not os.environ.get("VPTBENCH_REQUIRE_BROWSER"),
                                   reason="no Chromium here (bash .ci/browser installs Debian's, as root)")


@needs_browser
def test_the_browser_check_sees_a_broken_page(tmp_path):
    """The check can fail: a script error and a blocked network request both show as console messages."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!doctype html><html><body><div id="x"></div><img src="https://example.com/x.png">'
                   '<script>console.error("boom"); undefinedFunction();</script></body></html>')
    dom, console = load_in_browser(bad, tmp_path)
    assert '<div id="x">' in dom
    assert any("boom" in m for m in console) and any("undefinedFunction" in m for m in console), console


@pytest.mark.slow
@needs_browser
def test_chromium_draws_every_plot_with_no_console_error(trend, tmp_path):
    shot = tmp_path / "page.png"
    dom, console = load_in_browser(trend["out"] / "index.html", tmp_path, screenshot=shot)
    assert console == []
    # plotly drew each figure: an SVG per plot, and in it the machines' traces (markers + levels) as paths
    plots = re.findall(r'<div id="plot-\d+" class="plotly-graph-div[^"]*".*?</svg>', dom, flags=re.S)
    assert dom.count('class="main-svg"') >= 4 and len(plots) == 4
    traces = re.findall(r'<g class="trace scatter[^"]*"', dom)
    assert len(traces) == 4 * 2 * 2  # 4 plots x 2 machines x (values + fitted levels)
    drawn = re.findall(r'class="js-line"[^>]* d="M[\d.,]+L', dom) + re.findall(r'd="M[\d.,]+L[^"]*" class="js-line"', dom)
    assert len(drawn) >= 4 * 2, "the series' lines are not drawn"
    assert len(re.findall(r'class="point[ "]', dom)) >= 4 * 2 * 6  # a marker per commit per machine
    # the regression's step line is on the page in its colour, and the screenshot shows it
    import matplotlib.image as mpimg
    import numpy as np

    img = mpimg.imread(shot)[..., :3]
    assert img.shape[0] >= 1000 and img.std() > 0.05  # not a blank page
    red = np.all(np.abs(img - np.array([0xd6, 0x27, 0x28]) / 255) < 0.08, axis=-1)
    assert red.sum() > 200, "no regression marker (#d62728) in the rendered page"
