"""vptbench's evaluation equals the official HoT test function's, run beside it on the same files and weights.

The official scripts (`main_mixste.py`, seq2seq: stride-F clips on a centred grid, edge-padded, every frame
scored; `main_mhformer.py`, seq2frame: one edge-padded window per frame, its centre scored; both with flip
test-time augmentation, root zeroed, per-action means x 1000 then the mean over the 15 actions) are run as
their README runs them (`--test --previous_dir DIR`), in a subprocess with `.cuda()` made a no-op, on small
Human3.6M files in VideoPose3D's format (S9 and S11, all 15 actions, 'Walking' and 'Walking 1' both,
lengths shorter and longer than a clip, four cameras). The weights are the official model's own, random and
saved as its `save_model` saves them (a bare state dict); vptbench evaluates that file through
`vptbench run ... weights=FILE mode=eval`. Per-action MPJPE and P-MPJPE must agree to 0.01 mm.

The official per-action errors are read at full precision by wrapping `common.utils.print_error_action`
(it prints two decimals). The official side runs at batch size 1: its P-MPJPE gives every clip of a batch
that mixes two actions the batch mean (`mpjpe_by_action_p2`), so at its README batch sizes its P-MPJPE
depends on the batch size; one clip per batch is its intended per-clip value, which is what vptbench computes.
MPJPE does not depend on the batch size on either side.

Skipped unless VPTBENCH_OFFICIAL_HOT points to a checkout of NationalGAILab/HoT with `einops` and `timm`
importable (see tests/benchmarks/test_vs_official.py for the environment beside ours).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from h36m_files import write_h36m_files
from test_cli import vptbench

HOT = os.environ.get("VPTBENCH_OFFICIAL_HOT")
pytestmark = pytest.mark.skipif(not HOT, reason="set VPTBENCH_OFFICIAL_HOT to a checkout of the official HoT repo")

ACTIONS = ("Directions 1", "Discussion", "Eating 2", "Greeting", "Phoning 1", "Photo", "Posing 1", "Purchases",
           "Sitting 2", "SittingDown", "Smoking 1", "Waiting", "WalkDog 1", "Walking", "Walking 1",
           "WalkTogether 1")
# shorter than one clip, between one and two, exactly two, and longer (the official grid pads both ends)
LENGTHS = dict(zip(ACTIONS, [20, 27, 40, 54, 61, 33, 29, 45, 27, 58, 36, 31, 50, 26, 44, 39]))

# official script, model module, its args (the official models hard-code depth and heads), our cell
CASES = {
    "mixste_seq2seq": ("main_mixste.py", "mixste.mixste", dict(frames=27, channel=32, d_hid=64),
                       ["backbone=mixste", "preset=paper", "+backbone.overrides.embed_dim=32",
                        "+backbone.overrides.num_frames=27", "pipeline=seq2seq"]),
    "mhformer_seq2frame": ("main_mhformer.py", "mhformer.mhformer", dict(frames=27, channel=64, d_hid=128, stride=1),
                           ["backbone=mhformer", "preset=f27", "+backbone.overrides.embed_dim=64",
                            "+backbone.overrides.mlp_hidden=128", "pipeline=seq2frame"]),
}

# Saves the official model with random weights as its save_model does, then runs the official script's test
# with .cuda() a no-op and the per-action sums captured before they are printed.
RUNNER = textwrap.dedent("""
    import json, runpy, sys
    from types import SimpleNamespace
    import torch
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    hot, script, module, args_json, root, ckpt_dir, out = sys.argv[1:8]
    sys.path.insert(0, hot)
    args = json.loads(args_json)
    import importlib
    torch.manual_seed(0)
    model = importlib.import_module("model." + module).Model(SimpleNamespace(n_joints=17, out_joints=17, **args))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))   # zero-initialised embeddings too: every weight matters
    torch.save(model.state_dict(), ckpt_dir + "/model_1_0.pth")
    import common.utils as U
    official = U.print_error_action
    def capture(sums, is_train, data_type):
        p1, p2 = official(sums, is_train, data_type)
        per_action = {a: {"p1": float(v["p1"].avg) * 1000.0, "p2": float(v["p2"].avg) * 1000.0, "clips": v["p1"].count}
                      for a, v in sums.items()}
        json.dump({"per_action": per_action, "p1": float(p1), "p2": float(p2)}, open(out, "w"))
        return p1, p2
    U.print_error_action = capture
    sys.argv = [script, "--test", "--previous_dir", ckpt_dir, "--root_path", root + "/", "--keypoints", "gt",
                "--model", module, "--batch_size", "1", "--workers", "0"]
    for k, v in args.items():
        sys.argv += ["--" + k, str(v)]
    runpy.run_path(hot + "/" + script, run_name="__main__")
""")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_h36m_files(tmp_path_factory.mktemp("h36m"), frames=LENGTHS, subjects=("S9", "S11"),
                            actions=ACTIONS, seed=3)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_per_action_errors_equal_the_official_test_function(tmp_path, files, case):
    script, module, args, cell = CASES[case]
    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    runner = tmp_path / "run_official.py"
    runner.write_text(RUNNER)
    out = tmp_path / "official.json"
    proc = subprocess.run([sys.executable, str(runner), HOT, script, module, json.dumps(args), str(files["3d"].parent),
                           str(ckpt), str(out)], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    official = json.loads(out.read_text())
    weights = ckpt / "model_1_0.pth"

    store = tmp_path / "store"
    vptbench("run", *cell, "data=h36m", f"data.paths={{3d: {files['3d']}, 2d: {files['gt']}}}", f"weights={weights}",
             "mode=eval", "metrics=[accuracy]", "eval.batch_size=64", f"store={store}", timeout=1800)
    (rec,) = [json.loads(p.read_text()) for p in store.glob("*.json")]
    assert rec["status"] == "ok", rec.get("error")

    ours = rec["per_action_mpjpe_mm"]
    assert sorted(ours) == sorted(official["per_action"])          # all 15 protocol actions, Walking 1 in Walking
    rows = [(a, official["per_action"][a]["p1"], ours[a]) for a in sorted(ours)]
    print(f"\n{case}: action, official MPJPE, ours, |difference| (mm)")
    for a, theirs, mine in rows:
        print(f"  {a:<13} {theirs:10.4f} {mine:10.4f} {abs(theirs - mine):.2e}")
    print(f"  mean MPJPE official {official['p1']:.4f} ours {rec['mpjpe_mm']:.4f}; "
          f"P-MPJPE official {official['p2']:.4f} ours {rec['p_mpjpe_mm']:.4f}")
    for a, theirs, mine in rows:
        assert mine == pytest.approx(theirs, abs=0.01), a
    assert rec["mpjpe_mm"] == pytest.approx(official["p1"], abs=0.01)
    assert rec["p_mpjpe_mm"] == pytest.approx(official["p2"], abs=0.01)
    if "per_action_p_mpjpe_mm" in rec:
        for a in ours:
            assert rec["per_action_p_mpjpe_mm"][a] == pytest.approx(official["per_action"][a]["p2"], abs=0.01), a
