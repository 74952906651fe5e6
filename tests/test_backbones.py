"""Every registered backbone (parametrized over `list_backbones()`, so a new family is tested with no new
code): tiny-preset forward/backward, the hourglass contract, and the paper-size parameter parity."""
import pytest
import torch

from backbones import create, list_backbones

pytestmark = pytest.mark.usefixtures("one_thread")

BACKBONES = list_backbones()
CONTRACT_METHODS = ("embed_tokens", "forward_layer", "final_norm", "regress", "frame_features")
CONTRACT_ATTRS = ("depth", "num_frames", "embed_dim", "num_heads", "qkv_bias")


def _tiny(name):
    torch.manual_seed(0)
    model = create(name, preset="tiny")
    x = torch.randn(2, model.num_frames, 17, model.in_chans)
    return model, x


def _out_frames(model):
    return 1 if getattr(model, "regresses_centre", False) else model.num_frames


@pytest.mark.parametrize("name", BACKBONES)
def test_forward_shape_no_nan(name):
    model, x = _tiny(name)
    assert model.num_frames == 27
    model.eval()
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, _out_frames(model), 17, 3)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", BACKBONES)
def test_backward_reaches_every_parameter(name):
    model, x = _tiny(name)
    model.train()
    model(x).pow(2).mean().backward()  # the training path (dropout / drop-path) runs and is finite
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.zero_grad(set_to_none=True)
    # eval mode so drop-path cannot zero a whole branch for both samples: then every parameter must
    # receive a non-zero gradient (an unused or detached parameter would not)
    model.eval()
    model(x).pow(2).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", BACKBONES)
def test_hourglass_contract_members(name):
    model = create(name, preset="tiny")
    for method in CONTRACT_METHODS:
        assert callable(getattr(model, method, None)), method
    for attr in CONTRACT_ATTRS:
        assert hasattr(model, attr), attr
    assert isinstance(model.depth, int) and model.depth >= 2
    assert model.embed_dim % model.num_heads == 0
    assert isinstance(model.qkv_bias, bool)


@pytest.mark.parametrize("name", BACKBONES)
def test_contract_composition_equals_forward(name):
    """embed_tokens -> forward_layer x depth -> final_norm -> regress is exactly forward (the wrapper
    relies on it); time stays on dim 1 throughout."""
    model, x = _tiny(name)
    model.eval()
    with torch.no_grad():
        tokens = model.embed_tokens(x)
        assert tokens.shape[:2] == (2, model.num_frames)
        feats = model.frame_features(tokens)
        assert feats.ndim == 3 and feats.shape[:2] == (2, model.num_frames)
        for i in range(model.depth):
            tokens, attn = model.forward_layer(i, tokens)
            assert attn is None
            assert tokens.shape[:2] == (2, model.num_frames)
        y = model.regress(model.final_norm(tokens))
        torch.testing.assert_close(y, model(x), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", BACKBONES)
def test_forward_layer_weights_path(name):
    """Every layer that can precede a pruning stage returns temporal attention weights on request
    (B, ..., T, T) with rows summing to 1, and the explicit path gives the same tokens as SDPA."""
    model, x = _tiny(name)
    model.eval()
    T = model.num_frames
    with torch.no_grad():
        tokens = model.embed_tokens(x)
        for i in range(model.depth - 1):
            plain, _ = model.forward_layer(i, tokens)
            out, attn = model.forward_layer(i, tokens, need_weights=True)
            torch.testing.assert_close(out, plain, atol=1e-5, rtol=1e-5)
            assert attn is not None, f"layer {i} returned no weights"
            assert attn.shape[0] == 2 and attn.shape[-2:] == (T, T)
            torch.testing.assert_close(attn.sum(-1), torch.ones(attn.shape[:-1]))
            tokens = plain


def test_mixste_frame_features_is_the_joint_mean():
    model, x = _tiny("mixste")
    tokens = model.embed_tokens(x)
    torch.testing.assert_close(model.frame_features(tokens), tokens.mean(dim=2))


def test_mixste_tiny_preset_sizes():
    model = create("mixste", preset="tiny")
    assert (model.num_frames, model.depth, model.embed_dim, model.num_heads) == (27, 4, 32, 4)
    assert len(model.STEblocks) == len(model.TTEblocks) == 4


def test_mixste_paper_params_parity():
    """Reference C.5: MixSTE (243 frames) has 33.784 M parameters."""
    model = create("mixste", preset="paper")
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    assert params_m == pytest.approx(33.784, abs=0.001)
