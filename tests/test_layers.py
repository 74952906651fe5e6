"""backbones.layers: SDPA vs explicit-weights attention, cross-attention, drop-path, block."""
import math

import pytest
import torch
import torch.nn.functional as F

from backbones import layers
from backbones.layers import Attention, Block, CrossAttention, DropPath, Mlp, attend

pytestmark = pytest.mark.usefixtures("one_thread")


def _reference_mha(q_in, k_in, v_in, wq, bq, wk, bk, wv, bv, wo, bo, heads):
    """Textbook multi-head attention with explicit loops over heads: (B, N, C) -> (B, N, C), weights."""
    q, k, v = F.linear(q_in, wq, bq), F.linear(k_in, wk, bk), F.linear(v_in, wv, bv)
    C = q.shape[-1]
    d = C // heads
    outs, weights = [], []
    for h in range(heads):
        qh, kh, vh = (t[..., h * d:(h + 1) * d] for t in (q, k, v))
        w = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(d), dim=-1)
        weights.append(w)
        outs.append(w @ vh)
    return F.linear(torch.cat(outs, dim=-1), wo, bo), torch.stack(weights, dim=1)


def _self_reference(attn: Attention, x):
    C = x.shape[-1]
    W, b = attn.qkv.weight, attn.qkv.bias
    return _reference_mha(x, x, x, W[:C], b[:C], W[C:2 * C], b[C:2 * C], W[2 * C:], b[2 * C:],
                          attn.proj.weight, attn.proj.bias, attn.num_heads)


@pytest.mark.parametrize("keys", [5, layers.CPU_EXPLICIT_MAX_KEYS + 8])  # explicit / fused without weights on CPU
def test_attend_paths_agree(keys):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 7, 8), torch.randn(2, 4, keys, 8), torch.randn(2, 4, keys, 6)
    fused, none = attend(q, k, v)
    explicit, w = attend(q, k, v, need_weights=True)
    assert none is None
    assert fused.shape == explicit.shape == (2, 4, 7, 6)
    assert w.shape == (2, 4, 7, keys)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)


def test_attention_sdpa_and_explicit_paths_agree_with_reference():
    torch.manual_seed(0)
    attn = Attention(64, num_heads=4).eval()
    x = torch.randn(3, 27, 64)
    out_sdpa, w_none = attn(x)
    out_explicit, w = attn(x, need_weights=True)
    ref_out, ref_w = _self_reference(attn, x)
    assert w_none is None
    assert out_sdpa.shape == out_explicit.shape == (3, 27, 64)
    assert w.shape == (3, 4, 27, 27)
    torch.testing.assert_close(out_sdpa, out_explicit, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_explicit, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w, ref_w, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 4, 27))
    assert (w >= 0).all()


def test_attention_without_qkv_bias():
    attn = Attention(32, num_heads=8, qkv_bias=False)
    assert attn.qkv.bias is None
    out, _ = attn(torch.randn(2, 5, 32))
    assert out.shape == (2, 5, 32)


def test_attention_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="not divisible"):
        Attention(30, num_heads=4)
    with pytest.raises(ValueError, match="not divisible"):
        CrossAttention(30, num_heads=4)


def test_cross_attention_shapes_and_reference():
    torch.manual_seed(0)
    ca = CrossAttention(32, num_heads=4).eval()
    q, kv = torch.randn(2, 11, 32), torch.randn(2, 5, 32)
    out = ca(q, kv, kv)
    assert out.shape == (2, 11, 32)  # one output per query, whatever the key length
    ref, _ = _reference_mha(q, kv, kv, ca.linear_q.weight, ca.linear_q.bias, ca.linear_k.weight, ca.linear_k.bias,
                            ca.linear_v.weight, ca.linear_v.bias, ca.proj.weight, ca.proj.bias, 4)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # separate key and value inputs are honoured
    v = torch.randn(2, 5, 32)
    ref_kv, _ = _reference_mha(q, kv, v, ca.linear_q.weight, ca.linear_q.bias, ca.linear_k.weight,
                               ca.linear_k.bias, ca.linear_v.weight, ca.linear_v.bias, ca.proj.weight, ca.proj.bias, 4)
    torch.testing.assert_close(ca(q, kv, v), ref_kv, atol=1e-5, rtol=1e-5)


def test_drop_path_identity_in_eval_and_at_zero_rate():
    x = torch.randn(8, 3, 4)
    dp = DropPath(0.5).eval()
    assert torch.equal(dp(x), x)
    assert torch.equal(DropPath(0.0).train()(x), x)


def test_drop_path_training_drops_whole_samples_and_rescales():
    torch.manual_seed(0)
    x = torch.rand(256, 3, 4) + 1.0
    y = DropPath(0.25).train()(x)
    kept = (y != 0).flatten(1)
    # per sample either everything is kept (scaled by 1/keep) or everything is zeroed
    assert ((kept.all(1)) | (~kept.any(1))).all()
    torch.testing.assert_close(y[kept.all(1)], x[kept.all(1)] / 0.75)
    assert 0.1 < (~kept.any(1)).float().mean() < 0.4


def test_mlp_hidden_and_out_dims():
    mlp = Mlp(16, 48, out_dim=8)
    assert (mlp.fc1.out_features, mlp.fc2.out_features) == (48, 8)
    assert mlp(torch.randn(2, 3, 16)).shape == (2, 3, 8)


def test_block_matches_prenorm_residual_formula():
    torch.manual_seed(0)
    blk = Block(64, num_heads=4, mlp_ratio=2.0).eval()
    assert blk.mlp.fc1.out_features == 128
    x = torch.randn(2, 9, 64)
    y, none = blk(x)
    assert none is None and y.shape == x.shape
    h = x + _self_reference(blk.attn, blk.norm1(x))[0]
    expected = h + blk.mlp.fc2(F.gelu(blk.mlp.fc1(blk.norm2(h))))
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
    y_w, w = blk(x, need_weights=True)
    torch.testing.assert_close(y_w, y, atol=1e-5, rtol=1e-5)
    assert w.shape == (2, 4, 9, 9)


def test_block_backward():
    blk = Block(32, num_heads=4, drop_path=0.0)
    x = torch.randn(2, 5, 32, requires_grad=True)
    blk(x)[0].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in blk.parameters())


def test_every_model_is_built_from_plain_torch_modules():
    """Module-hook counters (thop, ptflops) match module types exactly: a subclass of nn.Linear counts as
    nothing. Every parameterised leaf of every backbone is a torch.nn module (or a model-specific
    container of plain parameters), never a vptbench subclass of one."""
    import backbones
    from backbones import create

    for name in backbones.list_backbones():
        for mod in create(name, preset="tiny").modules():
            cls = type(mod)
            if issubclass(cls, (torch.nn.Linear, torch.nn.LayerNorm, torch.nn.Conv1d, torch.nn.Conv2d,
                                torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.GELU)):
                assert cls.__module__.startswith("torch.nn"), f"{name}: {cls.__module__}.{cls.__name__}"


@pytest.mark.parametrize("kernel", layers.KERNELS)
@pytest.mark.parametrize("keys", [5, layers.CPU_EXPLICIT_MAX_KEYS + 8])
def test_attention_kernels_route_every_call_without_weights(monkeypatch, kernel, keys):
    """Inside `attention_kernels(choose)`, `choose(q, k, v)` decides the kernel, whatever the default rule
    would pick; calls that need the weights stay explicit; outside, the default rule is back."""
    seen = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(layers.F, "scaled_dot_product_attention", lambda *a, **kw: seen.append(1) or real(*a, **kw))
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 7, 8), torch.randn(2, 4, keys, 8), torch.randn(2, 4, keys, 8)
    expected, _ = attend(q, k, v, need_weights=True)
    default_sdpa = keys > layers.CPU_EXPLICIT_MAX_KEYS
    with layers.attention_kernels(lambda q_, k_, v_: kernel):
        out, _ = attend(q, k, v)
        assert len(seen) == (kernel == "sdpa")
        attend(q, k, v, need_weights=True)
        assert len(seen) == (kernel == "sdpa")
        seen.clear()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    attend(q, k, v)
    assert len(seen) == default_sdpa
    with layers.attention_kernels(lambda *a: None):  # no opinion: the default rule
        seen.clear()
        attend(q, k, v)
        assert len(seen) == default_sdpa


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("row", [1, 9, 17, 243])
def test_decomposed_softmax_is_torchs_softmax(dtype, row):
    """max, exp, sum, divide gives torch's softmax to rounding, for rows shorter and longer than a SIMD
    vector, with large scores (the max is subtracted) and in place only where nothing needs the input."""
    torch.manual_seed(0)
    scores = (torch.randn(3, 4, 5, row) * 30).to(dtype)
    expected = scores.softmax(dim=-1)
    tol = dict(atol=1e-6, rtol=1e-5) if dtype == torch.float32 else dict(atol=4e-3, rtol=1e-2)
    with torch.inference_mode():
        work = scores.clone()
        got = layers.softmax_decomposed(work)
        assert got.data_ptr() == work.data_ptr()  # in place: the caller's fresh product is reused
    torch.testing.assert_close(got, expected, **tol)
    if dtype == torch.float32:  # with autograd: out of place, and the gradient is softmax's
        leaf = scores.clone().requires_grad_()
        got = layers.softmax_decomposed(leaf)
        (got * torch.arange(row)).sum().backward()
        ref = scores.clone().requires_grad_()
        (ref.softmax(dim=-1) * torch.arange(row)).sum().backward()
        torch.testing.assert_close(got, expected, **tol)
        torch.testing.assert_close(leaf.grad, ref.grad, atol=1e-4, rtol=1e-3)  # weights up to 242
