"""backbones.registry: create / list / is_backbone, presets and overrides, one-line errors."""
import pytest

from backbones import backbone_config, create, is_backbone, list_backbones, list_presets
from backbones.registry import Registry

FAMILIES = ["mhformer", "mixste", "motionagformer", "motionbert", "poseformer"]


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


def test_list_backbones_has_every_family_sorted():
    names = list_backbones()
    assert set(FAMILIES) <= set(names)
    assert names == sorted(names)
    assert len(names) == len(set(names))


def test_is_backbone():
    assert is_backbone("mixste")
    assert not is_backbone("mixste_xl")
    assert not is_backbone("")


@pytest.mark.parametrize("filter, exclude, expected", [
    ("m*", "", ["mhformer", "mixste", "motionagformer", "motionbert"]),
    ("motion*", "", ["motionagformer", "motionbert"]),
    ("*former", "", ["mhformer", "motionagformer", "poseformer"]),
    (["pose*", "mix*"], "", ["mixste", "poseformer"]),
    ("m*", "motion*", ["mhformer", "mixste"]),
    ("", ["motion*", "m?former"], ["mixste", "poseformer"]),
    ("mixste", "", ["mixste"]),
    ("nothing*", "", []),
])
def test_list_filter_and_exclude_wildcards(filter, exclude, expected):
    # restricted to the known families so a newly registered one does not break the expectation
    got = [n for n in list_backbones(filter, exclude) if n in FAMILIES]
    assert got == expected


def test_create_tiny_mixste():
    model = create("mixste", preset="tiny")
    assert (model.num_frames, model.depth, model.embed_dim) == (27, 4, 32)


def test_override_replaces_one_field():
    model = create("mixste", preset="tiny", depth=2)
    assert model.depth == 2 and len(model.STEblocks) == 2
    assert model.embed_dim == 32  # the rest of the tiny preset is kept


def test_none_overrides_are_dropped():
    model = create("mixste", preset="tiny", depth=None, embed_dim=None)
    assert (model.depth, model.embed_dim) == (4, 32)
    cfg = backbone_config("mixste", "tiny", num_frames=None, depth=3)
    assert (cfg.num_frames, cfg.depth) == (27, 3)


def test_preset_none_means_the_default_preset():
    # Registry.build drops preset=None too, so the builder's default preset ("paper") is used
    assert create("poseformer", preset=None).num_frames == backbone_config("poseformer").num_frames == 81


def test_list_presets():
    for name in FAMILIES:
        assert {"paper", "tiny"} <= set(list_presets(name))


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ValueError) as err:
        create("mixtse", preset="tiny")
    msg = _one_line(err)
    assert "'mixtse'" in msg and "did you mean 'mixste'" in msg
    for name in list_backbones():
        assert name in msg.split("valid backbones:")[1]


@pytest.mark.parametrize("call", [lambda: backbone_config("nope"), lambda: list_presets("nope")])
def test_unknown_backbone_in_helpers(call):
    with pytest.raises(ValueError) as err:
        call()
    assert "unknown backbone 'nope'" in _one_line(err)


def test_unknown_preset_lists_valid_presets():
    with pytest.raises(ValueError) as err:
        create("mixste", preset="huge")
    msg = _one_line(err)
    assert "'huge'" in msg and "mixste" in msg
    assert msg.endswith("valid presets: " + ", ".join(list_presets("mixste")))  # the family's own sizes too
    assert list_presets("mixste") == ["f27", "f81", "f243", "paper", "tiny"]      # natural order


def test_unknown_override_lists_valid_options():
    with pytest.raises(ValueError) as err:
        create("mixste", preset="tiny", embed_dims=32, nframes=9)
    msg = _one_line(err)
    assert "embed_dims" in msg and "nframes" in msg
    valid = msg.split("valid options:")[1]
    for field in ("embed_dim", "depth", "num_frames", "num_heads"):
        assert field in valid


def test_backbone_config_validates_without_building():
    with pytest.raises(ValueError) as err:
        backbone_config("mixste", "tiny", bogus=1)
    assert "bogus" in _one_line(err)


def test_registry_register_get_build_and_duplicates():
    reg = Registry("widget")

    @reg.register
    def small(width=1):
        return ("small", width)

    @reg.register(name="big_one")
    def _big(width=10):
        return ("big", width)

    assert reg.names() == ["big_one", "small"]
    assert "small" in reg and "_big" not in reg
    assert reg.build("small", width=None) == ("small", 1)  # None = use the default
    assert reg.build("big_one", width=3) == ("big", 3)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register(small, name="small")
    with pytest.raises(ValueError) as err:
        reg.get("smal")
    assert _one_line(err) == "unknown widget 'smal' (did you mean 'small'?); valid widgets: big_one, small"


def test_registry_natural_sort():
    reg = Registry("x")
    for n in ("b10", "b2", "a1"):
        reg.register(lambda: None, name=n)
    assert reg.names() == ["a1", "b2", "b10"]
