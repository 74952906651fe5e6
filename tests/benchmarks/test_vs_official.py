"""Ours vs the official implementations, side by side in one process: same weights, same input ->
outputs within 1e-4 (fp32) and bf16 moving ours no more than the official ones, and the throughput ratio
in fp32 and bf16 at batch 1 and 16 with ours' GEMM floor, the ceiling any attention kernel could reach, and
the CPU named (printed, not asserted: timings).

Covers the four backbones of the official HoT repository (MixSTE, MotionBERT, MotionAGFormer,
MHFormer), its HoT / TPC variants, and PoseFormer from its own repository. The pruned variants
select frames by DPC-kNN with random jitter, so the official model's selection is captured (its
clustering function is wrapped) and replayed into ours (`forward_with_index(indices=...)`): the
comparison then checks everything except the tie-breaking noise. Their speed runs compare each side
with its own selection.

Skipped unless VPTBENCH_OFFICIAL_HOT points to a checkout of NationalGAILab/HoT (and, for PoseFormer,
VPTBENCH_OFFICIAL_POSEFORMER to a directory holding zczcwh/PoseFormer's common/model_poseformer.py),
with `einops` and `timm` importable. Nothing of them is committed here. Reproduce (timm 0.4.12, the
version of the official code's era; its image transforms import torchvision, which a CPU torch lacks, so
a stand-in module whose attributes are empty classes is put on the path; the pose models never use it):

    git clone https://github.com/NationalGAILab/HoT /tmp/hot
    git clone https://github.com/zczcwh/PoseFormer /tmp/poseformer
    pip install --no-deps --target /tmp/offdeps einops==0.8.2 timm==0.4.12   # an environment beside ours
    mkdir -p /tmp/offstub/torchvision/transforms   # __init__.py in both and transforms/functional.py: `def __getattr__(name): return type(name, (), {})`
    VPTBENCH_OFFICIAL_HOT=/tmp/hot VPTBENCH_OFFICIAL_POSEFORMER=/tmp/poseformer/common \
        PYTHONPATH=/tmp/offdeps:/tmp/offstub .venv/bin/python -m pytest tests/benchmarks/test_vs_official.py -s
    # VPTBENCH_OFFICIAL_BATCHES=1 for batch 1 only (batch 16 at paper size takes minutes per model)
"""
from __future__ import annotations

import importlib
import os
import sys
import tempfile
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Optional

import pytest
import torch

from backbones import create, create_hourglass, layers, load_pretrained
from bench.measure import fastpath
from bench.measure.speed import measure_speed

HOT = os.environ.get("VPTBENCH_OFFICIAL_HOT")
POSEFORMER = os.environ.get("VPTBENCH_OFFICIAL_POSEFORMER")
pytestmark = pytest.mark.skipif(not HOT, reason="set VPTBENCH_OFFICIAL_HOT to a checkout of the official HoT repo")

ARGS = dict(channel=512, d_hid=1024, n_joints=17, out_joints=17, frames=243, maxlen=243, depth=5, dim_feat=256,
            mlp_ratio=4, dim_rep=512, num_heads=8)


@dataclass
class Case:
    module: str                     # official module; its `Model(args)` (or `builder`) makes the model
    family: str
    frames: int
    chans: int
    schedule: tuple = ()
    pipeline: str = "seq2seq"
    cluster_fn: Optional[str] = None  # "module:function" the official model selects frames with
    args: dict = field(default_factory=dict)

    def official(self):
        root = POSEFORMER if self.family == "poseformer" else HOT
        if root not in sys.path:
            sys.path.insert(0, root)
        mod = importlib.import_module(self.module)
        if self.family == "poseformer":  # run_poseformer.py's settings for 81 frames
            return mod.PoseTransformer(num_frame=81, num_joints=17, in_chans=2, embed_dim_ratio=32, depth=4,
                                       num_heads=8, mlp_ratio=2.0, qkv_bias=True, qk_scale=None,
                                       drop_path_rate=0.1).eval()
        return mod.Model(SimpleNamespace(**dict(ARGS, frames=self.frames, **self.args))).eval()

    def ours(self):
        if not self.schedule:
            return create(self.family).eval()
        recoverer = "attention" if self.pipeline == "seq2seq" else "none"
        return create_hourglass(self.family, "paper", "cluster", recoverer, [list(s) for s in self.schedule],
                                pipeline=self.pipeline).eval()


CASES = {
    "mixste": Case("model.mixste.mixste", "mixste", 243, 2),
    "motionbert": Case("model.motionbert.motionbert", "motionbert", 243, 3),
    "motionagformer": Case("model.motionagformer.motionagformer", "motionagformer", 243, 3),
    "mhformer": Case("model.mhformer.mhformer", "mhformer", 351, 2),
    "poseformer": Case("model_poseformer", "poseformer", 81, 2),
    "hot_mixste": Case("model.mixste.hot_mixste", "mixste", 243, 2, ((3, 81),),
                       cluster_fn="model.mixste.hot_mixste:cluster_dpc_knn", args=dict(token_num=81, layer_index=3)),
    "hot_motionbert": Case("model.motionbert.hot_motionbert", "motionbert", 243, 3, ((1, 81),),
                           cluster_fn="model.motionbert.hot_motionbert:cluster_dpc_knn"),
    "hot_motionagformer": Case("model.motionagformer.hot_motionagformer", "motionagformer", 243, 3, ((7, 81),),
                               cluster_fn="model.motionagformer.hot_motionagformer:cluster_dpc_knn"),
    "tpc_mixste": Case("model.mixste.tpc_mixste", "mixste", 243, 2, ((7, 61),), "seq2frame",
                       cluster_fn="model.mixste.tpc_mixste:cluster_dpc_knn_center",
                       args=dict(token_num=61, layer_index=7)),
    "tpc_mhformer": Case("model.mhformer.tpc_mhformer", "mhformer", 351, 2, ((1, 117),), "seq2frame",
                         cluster_fn="model.mhformer.module.trans_hypothesis_cluster:cluster_dpc_knn_center",
                         args=dict(token_num=117, layer_index=1)),
}


def _available(name):
    return name != "poseformer" or POSEFORMER


PARAMS = [pytest.param(n, marks=pytest.mark.skipif(not _available(n), reason="set VPTBENCH_OFFICIAL_POSEFORMER"))
          for n in CASES]


def _pair(name):
    case = CASES[name]
    torch.manual_seed(0)
    official = case.official()
    with torch.no_grad():  # randomise every tensor so no key can be silently left at its init
        for key, p in official.state_dict().items():
            if p.is_floating_point():
                noise = torch.randn_like(p) * 0.05
                p.copy_(noise.abs() + 0.5 if key.endswith("running_var") else noise)
    ours = case.ours()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "official.pth")
        torch.save(official.state_dict(), path)
        load_pretrained(ours, path)
    return case, official, ours


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


class _Capture:
    """Wraps the official clustering function and keeps the frames it selected, as the official model
    then uses them: sorted, with the centre frame added for the TPC (`*_center`) variants."""

    def __init__(self, spec: str, centre: int):
        self.module, self.name = spec.split(":")
        self.centre, self.index = centre, None

    def __enter__(self):
        mod = importlib.import_module(self.module)
        self.orig = getattr(mod, self.name)

        def wrapped(*a, **k):
            index, idx_cluster = self.orig(*a, **k)
            full = index
            if self.name.endswith("_center"):
                full = torch.cat([index, torch.full_like(index[:, :1], self.centre)], dim=-1)
            self.index = full.sort(dim=-1).values
            return index, idx_cluster

        setattr(mod, self.name, wrapped)
        return self

    def __exit__(self, *exc):
        setattr(importlib.import_module(self.module), self.name, self.orig)


@pytest.mark.parametrize("name", PARAMS)
def test_outputs_match_official(name):
    case, official, ours = _pair(name)
    x = torch.randn(2, case.frames, 17, case.chans)
    with torch.inference_mode():
        if case.cluster_fn:
            with _Capture(case.cluster_fn, (case.frames - 1) // 2) as cap:
                ref = _first(official(x.clone()))
            # TPC models return the poses of every kept frame; so does ours with kept_only
            mine = ours.forward_with_index(x, indices=[cap.index], kept_only=case.pipeline == "seq2frame")[0]
        else:
            ref, mine = _first(official(x.clone())), ours(x)
    assert ref.shape == mine.shape, (ref.shape, mine.shape)
    diff = (ref - mine).abs().max().item()
    scale = ref.abs().max().item()
    print(f"\n{name}: max |official - ours| = {diff:.2e} (max |official| = {scale:.2e})")
    # within 1e-4, relative to the output's magnitude (random weights make outputs large)
    assert diff < 1e-4 * max(1.0, scale)


def _cpu() -> str:
    from bench.cell import environment

    return environment()["cpu_name"]


def _skip_if_official_lacks_dtype(name: str, side: str, precision: str, e: RuntimeError) -> None:
    """The official MotionAGFormer builds float32 tensors inside its forward: it cannot run in bf16."""
    if side == "official" and "dtype" in str(e):
        pytest.skip(f"the official {name} does not run with {precision} weights: {str(e).splitlines()[0]}")


@pytest.mark.parametrize("name", PARAMS)
def test_bf16_outputs_move_as_bf16_moves_the_official_ones(name):
    """Deployment bf16 (weights and activations, `fastpath.timing_model`) applied to both models: ours
    moves from fp32 by no more than bf16 moves the official model (plus a margin for rounding order)."""
    from bench.measure.fastpath import timing_model

    case, official, ours = _pair(name)
    if case.cluster_fn:
        pytest.skip("pruned variants select frames by float scores: bf16 can pick other frames on either side")
    x = torch.randn(2, case.frames, 17, case.chans)
    errs = {}
    with torch.inference_mode():
        for side, model in (("official", official), ("ours", ours)):
            ref = _first(model(x.clone())).float()
            try:
                run, (xb,), _ = timing_model(model, (x.clone(),), "bf16", "cpu")
                out = _first(run(xb)).float()
            except RuntimeError as e:
                _skip_if_official_lacks_dtype(name, side, "bf16", e)
                raise
            errs[side] = ((out - ref).norm() / ref.norm()).item()
    print(f"\n{name} bf16 vs fp32, relative L2: official {errs['official']:.2e}, ours {errs['ours']:.2e} ({_cpu()})")
    assert errs["ours"] <= 1.5 * errs["official"] + 1e-3


BATCHES = [int(b) for b in os.environ.get("VPTBENCH_OFFICIAL_BATCHES", "1,16").split(",")]


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", PARAMS)
def test_speed_vs_official(monkeypatch, name, precision, batch):
    """Both models through the same timing path (`measure_speed`: the CPU's faster fp32 GEMM path, or a
    bf16 copy), alternating three times; best of each side. Prints the ratio, ours' GEMM floor, the CPU
    it ran on, and a ceiling: ours with every attention product skipped (SDPA returning zeros, no
    kernel choice). Everything else a forward runs (Linear, norms, activations, adds, layout copies) is
    the same op on both sides, so no attention kernel can take ours past `official / attention-free`."""
    case, official, ours = _pair(name)
    make = lambda b: (torch.randn(b, case.frames, 17, case.chans, generator=torch.Generator().manual_seed(0)),)  # noqa: E731
    kw = dict(frames_out_per_clip=case.frames, batch_size=batch, threads=2, warmup=1, iters=1,
              repeats=5 if batch == 1 else 2, precision=precision)
    rows = {}
    for _ in range(3 if batch == 1 else 2):  # alternate, so drift on a shared machine hits all three
        for side, model in (("official", official), ("ours", ours), ("ceiling", ours)):
            with monkeypatch.context() as free:
                if side == "ceiling":
                    free.setattr(layers.F, "scaled_dot_product_attention",
                                 lambda q, k, v, *a, **kw: q.new_zeros(q.shape[:-1] + v.shape[-1:]))
                    free.setattr(fastpath, "attention_kernel_table", lambda *a, **kw: {})
                try:
                    rows.setdefault(side, []).append(measure_speed(model, make, floor=side == "ours", **kw))
                except RuntimeError as e:
                    if precision != "fp32":
                        _skip_if_official_lacks_dtype(name, side, precision, e)
                    raise
    o, c = (max(r["clips_per_s"] for r in rows[side]) for side in ("official", "ceiling"))
    best = max(rows["ours"], key=lambda r: r["clips_per_s"])
    u, floor = best["clips_per_s"], best["floor_s"]
    print(f"\n{name} [{precision}, batch {batch}] on {_cpu()}, 2 threads: official {batch / o:.3f} s, ours "
          f"{batch / u:.3f} s per forward, ratio {u / o:.3f}x; Linear-only floor {floor:.3f} s, ours / floor "
          f"{batch / u / floor:.2f}; attention free {batch / c:.3f} s, ceiling {c / o:.3f}x ({best['speed_path']})")
    assert u > 0 and o > 0 and c > 0
