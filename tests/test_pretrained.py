"""Official checkpoints load into our models: the key mapping is total (fixture of official key names
and shapes), containers and `module.` prefixes are unwrapped, and misfits give one clear line."""
import pytest
import torch

from backbones import create, create_hourglass, list_backbones, load_pretrained
from tests.fixtures.official_keys import OFFICIAL, OFFICIAL_COUNTS, hot_extras, motionagformer, state_dict_of


def _save(tmp_path, obj, name="ckpt.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def test_every_family_has_a_fixture():
    assert set(OFFICIAL) == set(list_backbones())


@pytest.mark.parametrize("family", sorted(OFFICIAL))
def test_official_backbone_keys_map_totally(tmp_path, family):
    spec = OFFICIAL[family]()
    assert len(spec) == OFFICIAL_COUNTS[family] == len({k for k, _ in spec})
    state = state_dict_of(spec)
    for i, v in enumerate(state.values()):  # distinct values prove every tensor lands where it belongs
        v.fill_(i)
    model = create(family)
    load_pretrained(model, _save(tmp_path, {"model_pos": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}))
    own = model.state_dict()
    for k, v in state.items():
        assert torch.equal(own[k], v.to(own[k].dtype)), k


@pytest.mark.parametrize("family,schedule,dim,qkv_bias,fpl", [
    ("mixste", [[3, 81]], 512, True, None),
    ("motionbert", [[1, 81]], 256, True, None),
    ("motionagformer", [[7, 81]], 128, False, (243,) * 7 + (81,) * 9),
])
def test_official_hot_checkpoint_maps_totally(tmp_path, family, schedule, dim, qkv_bias, fpl):
    spec = (motionagformer(fpl) if fpl else OFFICIAL[family]()) + hot_extras(dim, qkv_bias=qkv_bias)
    state = state_dict_of(spec)
    state["x_token"].fill_(1.5)
    state["pos_embed_token"].fill_(-2.0)
    model = create_hourglass(family, "paper", "cluster", "attention", schedule)
    load_pretrained(model, _save(tmp_path, state))  # HoT files are flat, unprefixed
    assert torch.all(model.recoverer.x_token == 1.5)
    assert torch.all(model.pos_embed_token[0] == -2.0)


def test_misfit_lists_missing_unexpected_and_shapes(tmp_path):
    state = state_dict_of(OFFICIAL["mixste"]())
    del state["head.1.bias"]
    state["extra.weight"] = torch.zeros(3)
    state["Temporal_pos_embed"] = torch.zeros(1, 81, 512)
    with pytest.raises(ValueError) as e:
        load_pretrained(create("mixste"), _save(tmp_path, state))
    msg = str(e.value)
    assert "\n" not in msg
    assert "1 missing: head.1.bias" in msg and "1 unexpected: extra.weight" in msg
    assert "Temporal_pos_embed (1, 81, 512) vs (1, 243, 512)" in msg


def test_bad_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_pretrained(create("mixste", preset="tiny"), tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="no state dict"):
        load_pretrained(create("mixste", preset="tiny"), _save(tmp_path, {"epoch": 1}))
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        load_pretrained(create("mixste", preset="tiny"), bad)


def test_round_trip_changes_outputs_exactly(tmp_path):
    torch.manual_seed(0)
    src = create("motionbert", preset="tiny").eval()
    dst = create("motionbert", preset="tiny").eval()
    load_pretrained(dst, _save(tmp_path, {"model": src.state_dict()}))
    x = torch.randn(2, 27, 17, 3)
    assert torch.equal(src(x), dst(x))
