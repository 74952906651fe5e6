"""FLOPs: handles against counts written out by hand from shapes, the paper convention counted three
ways, and torch's FlopCounterMode as an independent check. Every FLOP number is 2 x MACs, in GFLOPs."""
import logging
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.measure._fvcore import FlopCountAnalysis
from bench.measure.flops import (count_flops, count_params, flop_counter_mode_gflops, paper_gflops_by_module,
                                 paper_gflops_by_op_set)

pytestmark = pytest.mark.usefixtures("one_thread")

G = 2 / 1e9  # MACs -> GFLOPs


class Fn(nn.Module):
    """A function as a module, so that fvcore can trace it; submodules are registered."""

    def __init__(self, fn, **modules):
        super().__init__()
        self.fn, self.mods = fn, nn.ModuleDict(modules)

    def forward(self, *args):
        return self.fn(self.mods, *args)


def _ops_traced(module, *inputs):
    """The aten ops of a trace that fvcore does not ignore, counted with no handle registered."""
    fca = FlopCountAnalysis(module, inputs).clear_op_handles().unsupported_ops_warnings(False)
    assert fca.total() == 0
    return dict(fca.unsupported_ops())


@pytest.fixture(autouse=True, scope="module")
def aten_names_unchanged():
    """setUp: the handles are keyed by these aten names; if a torch upgrade renames one, stop here."""
    assert _ops_traced(nn.Linear(4, 5), torch.randn(1, 4)) == {"aten::linear": 1}
    assert _ops_traced(nn.Conv1d(4, 5, 1), torch.randn(1, 4, 3)) == {"aten::_convolution": 1}
    q = torch.randn(1, 2, 3, 4)
    sdpa = Fn(lambda _, q: F.scaled_dot_product_attention(q, q, q))
    assert _ops_traced(sdpa, q) == {"aten::scaled_dot_product_attention": 1}


r = torch.randn
HAND_COUNTS = {
    # name: (module, inputs, fvcore row, MACs by hand, FlopCounterMode counts it)
    "linear": (nn.Linear(8, 16), (r(1, 10, 8),), "linear", 10 * 8 * 16, True),
    "conv1d": (nn.Conv1d(16, 4, 3, padding=1), (r(1, 16, 10),), "conv", 10 * 4 * 16 * 3, True),
    # q (1, 2, 10, 8), k (1, 2, 6, 8), v (1, 2, 6, 4): B·H·N·M·(D + Dv)
    "sdpa": (Fn(lambda _, q, k, v: F.scaled_dot_product_attention(q, k, v)),
             (r(1, 2, 10, 8), r(1, 2, 6, 8), r(1, 2, 6, 4)), "scaled_dot_product_attention", 2 * 10 * 6 * (8 + 4), True),
    "matmul_broadcast": (Fn(lambda _, a, x: a @ x), (r(10, 10), r(3, 10, 8)), "matmul", 3 * 10 * 10 * 8, True),
    # a matrix @ a vector runs as aten::mv, which FlopCounterMode (torch 2.13) does not count
    "matmul_vector": (Fn(lambda _, a, v: a @ v), (r(3, 5, 8), r(8)), "matmul", 3 * 5 * 8, False),
    "bmm": (Fn(lambda _, a, b: torch.bmm(a, b)), (r(3, 10, 8), r(3, 8, 5)), "bmm", 3 * 10 * 8 * 5, True),
    "einsum": (Fn(lambda _, a, b: torch.einsum("bnc,bmc->bnm", a, b)), (r(2, 10, 16), r(2, 6, 16)), "einsum",
               2 * 10 * 6 * 16, True),
    "cdist": (Fn(lambda _, a, b: torch.cdist(a, b)), (r(2, 10, 16), r(2, 6, 16)), "cdist", 2 * 10 * 6 * 16, False),
    "layer_norm": (nn.LayerNorm(16), (r(1, 10, 16),), "layer_norm", 5 * 10 * 16, False),  # fvcore: 5 per element
}


@pytest.mark.parametrize("name", list(HAND_COUNTS))
def test_hand_counts(name):
    module, inputs, row, macs, torch_counts_it = HAND_COUNTS[name]
    rep = count_flops(module, inputs)
    assert rep.by_operator == {row: pytest.approx(macs * G)}
    assert rep.gflops_total == pytest.approx(macs * G)
    assert rep.gflops == pytest.approx(macs * G if row in ("linear", "conv") else 0.0)
    assert rep.uncounted_ops == []
    if torch_counts_it:
        assert flop_counter_mode_gflops(module, inputs) == pytest.approx(macs * G, rel=1e-6)


def test_fvcore_default_matmul_misses_the_broadcast_batch():
    """Why `matmul_flop_jit` replaces fvcore's: a fixed (J, J) adjacency times batched features."""
    a, x = r(10, 10), r(3, 10, 8)
    fca = FlopCountAnalysis(Fn(lambda _, a, x: a @ x), (a, x)).unsupported_ops_warnings(False)
    assert fca.by_operator()["matmul"] == 10 * 10 * 8  # one matrix of the batch of 3


def test_uncounted_ops_are_exactly_the_ops_without_handle():
    """A pruning-like forward: softmax/sum/topk/sort/gather are ignored on purpose and linear counted;
    cumprod and logsumexp have no handle and must be named, not silently dropped."""

    def forward(m, x):                                             # (1, 10, 8)
        x = m["fc"](x)
        idx = x.softmax(-1).sum(-1).topk(4, dim=1).indices.sort(dim=1).values
        kept = x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))   # (1, 4, 8)
        return kept.cumprod(1) + torch.logsumexp(kept, -1, keepdim=True)

    rep = count_flops(Fn(forward, fc=nn.Linear(8, 8)), (r(1, 10, 8),))
    assert rep.uncounted_ops == ["aten::cumprod", "aten::logsumexp"]
    assert rep.by_operator == {"linear": pytest.approx(10 * 8 * 8 * G)}


class SmallBlock(nn.Module):
    """Pre-norm transformer block on (B, N, C) with an einsum token mixer; `explicit` picks
    q·kᵀ -> softmax -> ·v instead of SDPA."""

    def __init__(self, n=10, dim=16, heads=2, explicit=False):
        super().__init__()
        self.heads, self.explicit = heads, explicit
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
        self.mix = nn.Parameter(torch.randn(n, n) / n)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        if self.explicit:
            a = ((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5).softmax(dim=-1) @ v
        else:
            a = F.scaled_dot_product_attention(q, k, v)           # (B, H, N, C/H)
        x = x + self.proj(a.transpose(1, 2).reshape(B, N, C))
        x = x + self.fc2(F.gelu(self.fc1(self.norm2(x))))
        return torch.einsum("nm,bmc->bnc", self.mix, x)


# SmallBlock at B=1, N=10, C=16, 2 heads of 8, in MACs
BLOCK_LAYERS = 10 * 16 * 48 + 10 * 16 * 16 + 10 * 16 * 32 + 10 * 32 * 16   # qkv, proj, fc1, fc2
BLOCK_ATTN = 2 * 10 * 10 * (8 + 8)                                        # q·kᵀ and attn·v, 2 heads
BLOCK_EINSUM = 10 * 10 * 16
BLOCK_NORMS = 2 * 5 * 10 * 16


@pytest.mark.parametrize("explicit", [False, True])
def test_small_block_by_hand(explicit):
    rep = count_flops(SmallBlock(explicit=explicit), (r(1, 10, 16),))
    assert rep.gflops == pytest.approx(BLOCK_LAYERS * G)
    assert rep.gflops_total == pytest.approx((BLOCK_LAYERS + BLOCK_ATTN + BLOCK_EINSUM + BLOCK_NORMS) * G)
    attn_row = "matmul" if explicit else "scaled_dot_product_attention"
    assert rep.by_operator[attn_row] == pytest.approx(BLOCK_ATTN * G)
    assert rep.uncounted_ops == []


def test_paper_convention_three_ways_agree():
    model, x = SmallBlock(), (r(1, 10, 16),)
    gflops = count_flops(model, x).gflops
    assert paper_gflops_by_op_set(model, x) == pytest.approx(gflops, rel=1e-12)
    assert paper_gflops_by_module(model, x) == pytest.approx(gflops, rel=1e-12)


def test_by_module_misses_functional_linear():
    """The documented difference: F.linear outside an nn.Linear counts by op set, not by module type."""
    model = Fn(lambda m, x, w: m["fc"](x) + F.linear(x, w), fc=nn.Linear(8, 4))
    x = (r(1, 10, 8), r(4, 8))
    assert count_flops(model, x).gflops == pytest.approx(2 * 10 * 8 * 4 * G)
    assert paper_gflops_by_module(model, x) == pytest.approx(10 * 8 * 4 * G)


MATMUL_ROWS = ("linear", "conv", "scaled_dot_product_attention", "matmul", "bmm", "einsum")


def _matmul_part(rep):
    return sum(v for k, v in rep.by_operator.items() if k in MATMUL_ROWS)


@pytest.mark.parametrize("explicit", [False, True])
def test_matmul_part_matches_flop_counter_mode(explicit):
    """FlopCounterMode counts mm/addmm/bmm (attention as bmm under the MATH backend), not norms."""
    model, x = SmallBlock(explicit=explicit), (r(1, 10, 16),)
    rep = count_flops(model, x)
    assert _matmul_part(rep) == pytest.approx(flop_counter_mode_gflops(model, x), rel=1e-6)
    assert _matmul_part(rep) == pytest.approx((BLOCK_LAYERS + BLOCK_ATTN + BLOCK_EINSUM) * G)


def test_sdpa_and_explicit_attention_count_the_same():
    x = (r(1, 10, 16),)
    fused, explicit = count_flops(SmallBlock(), x), count_flops(SmallBlock(explicit=True), x)
    assert fused.gflops_total == pytest.approx(explicit.gflops_total, rel=1e-12)
    assert fused.gflops == pytest.approx(explicit.gflops, rel=1e-12)


@pytest.mark.parametrize("backbone, pruner, in_chans", [("mixste", "cluster", 2), ("motionagformer", "uniform", 3)])
def test_pruned_hourglass_end_to_end(backbone, pruner, in_chans):
    """Real tiny models (27 frames, pruned to 9 before layer 1): nothing uncounted, the paper convention
    three ways, the matmul part equal to FlopCounterMode (MotionAGFormer's GCN multiplies a fixed
    adjacency into batched features), and the cluster pruner's distance matrix counted: 27 x 27 x C."""
    from backbones import create_hourglass

    torch.manual_seed(0)
    model = create_hourglass(backbone, "tiny", pruner, "attention", [[1, 9]]).eval()
    clip = (r(1, 27, 17, in_chans),)
    rep = count_flops(model, clip)
    assert rep.uncounted_ops == []
    assert paper_gflops_by_op_set(model, clip) == pytest.approx(rep.gflops, rel=1e-12)
    assert paper_gflops_by_module(model, clip) == pytest.approx(rep.gflops, rel=1e-12)
    assert _matmul_part(rep) == pytest.approx(flop_counter_mode_gflops(model, clip), rel=1e-6)
    if pruner == "cluster":
        assert rep.by_operator["cdist"] == pytest.approx(27 * 27 * model.backbone.embed_dim * G)


def test_dict_and_mixed_outputs_are_traced():
    model = Fn(lambda m, x: {"pose": m["fc"](x), "aux": (None, 3, [x.sum()])}, fc=nn.Linear(8, 16))
    assert count_flops(model, r(1, 10, 8)).gflops == pytest.approx(10 * 8 * 16 * G)


def test_silent_on_data_dependent_indexing(caplog):
    """Token pruning indexes with data-dependent values; no tracer or fvcore warning may escape."""
    model = Fn(lambda m, x: m["fc"](x)[:, : int(x.abs().sum().item() > 0) + 2], fc=nn.Linear(8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with caplog.at_level(logging.WARNING):
            rep = count_flops(model, (r(1, 10, 8),))
    assert caplog.records == [] and rep.uncounted_ops == []


def test_modes_restored_and_unregistered_module_explained():
    model = SmallBlock().train()
    model.norm1.eval()
    count_flops(model, (r(1, 10, 16),))
    flop_counter_mode_gflops(model, (r(1, 10, 16),))
    assert model.training and not model.norm1.training and model.fc1.training
    assert all(p.requires_grad for p in model.parameters())

    outside = nn.Linear(8, 8)
    with pytest.raises(RuntimeError) as err:
        count_flops(Fn(lambda _, x: outside(x)), (r(1, 10, 8),))
    assert any("register it as a submodule" in note for note in err.value.__notes__)


def test_params_in_millions_frozen_included_buffers_excluded():
    frozen = nn.Linear(3, 4).requires_grad_(False)                 # 12 + 4
    model = nn.Sequential(nn.BatchNorm1d(10), frozen)              # 10 + 10, buffers 10 + 10 + 1
    model.register_buffer("mask", torch.ones(100))
    assert count_params(model) == pytest.approx((20 + 16) / 1e6)
