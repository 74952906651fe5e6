"""The families' own sizes as presets: each preset is the official configuration, and its parameter count
equals the published figure to the precision the source prints (or, where it cannot, the gap is measured
and documented here as a strict xfail plus a test that pins the gap).

Naming: where a family names its variants, the preset is that name in lower case (MotionAGFormer `xs`, `s`,
`b`, `l`; MotionBERT `full`, `lite`); where a family has one architecture whose only published size knob
is the receptive field, the preset is `f<frames>` (MHFormer, PoseFormer, MixSTE). `paper` stays HoT's
setting and `tiny` the CPU size; both are unchanged (pinned below).

Sources (figures quoted as printed):
  MAGF  TaatiTeam/MotionAGFormer README.md @ 4756fd1eb7cc73f0e991f091ff2280e030ab85f3, "Evaluation" table,
        "# Params": XS 2.2M, S 4.8M, B 11.7M, L 19.0M; configs/h36m/MotionAGFormer-{xsmall,small,base,large}.yaml.
  MB    Walter0807/MotionBERT README.md @ dccfe7b14a7f09aae2e27a16d951cb4c6f6e62f6, model table:
        "MotionBERT (162MB)" (configs/pretrain/MB_pretrain.yaml), "MotionBERT-Lite (61MB)" (MB_lite.yaml).
        Release files hold the weights only (maintainer, github.com/Walter0807/MotionBERT/issues/72: training
        state was "removed ... in the release"), so size = params x 4 bytes (fp32); "MB" read as MiB.
  PF    Zheng et al., ICCV 2021 (arXiv 2103.10455), Table 6, "Parameters (M)": f=9 9.58, f=27 9.59, f=81 9.60.
  MHF   Li et al., CVPR 2022 (arXiv 2111.12707), Tables 5 and 6, "Params (M)" 18.92 for the final model
        (L1=4, M=3, L2=2, L3=1, C=512); "ablations ... are carried out using a receptive field of 27 frames".
        No parameter count is printed for 81 / 243 / 351 frames (Table 4 gives MPJPE only).
  MIX   Zhang et al., CVPR 2022 (arXiv 2203.00859), Sec. 4.4: "we choose the Depth = 8 rather than Depth = 10
        because the latter setting introduces a more significant number of parameters (33.7M vs. 42.2M)"
        (Channel 512; the input length of the two figures is not stated).
"""
import functools

import pytest
import torch

from backbones import create, list_presets
from backbones.mhformer import PRESETS as MHF, MHFormerConfig
from backbones.mixste import PRESETS as MIX, MixSTEConfig
from backbones.motionagformer import PRESETS as MAGF, MotionAGFormerConfig
from backbones.motionbert import PRESETS as MB, MotionBERTConfig
from backbones.poseformer import PRESETS as PF, PoseFormerConfig

NEW = {"motionagformer": ("xs", "s", "b", "l", "base"), "motionbert": ("full", "lite"),
       "mhformer": ("f27", "f81", "f243", "f351"), "poseformer": ("f9", "f27", "f81"), "mixste": ("f27", "f81", "f243")}


def numel(model) -> int:
    return sum(p.numel() for p in model.parameters())


def leaf_numel(model) -> int:
    """Parameters owned by leaf modules only, i.e. without the nn.Parameters a composite module holds itself
    (positional embeddings, layer scales). This is what thop 0.1.1's `profile()` returns as params
    (checked equal on every preset below), the tool the MotionAGFormer, MixSTE-issue and HoT numbers use."""
    return sum(p.numel() for m in model.modules() if next(m.children(), None) is None
               for p in m.parameters(recurse=False))


@functools.lru_cache(maxsize=None)
def counts(name: str, preset: str, overrides: tuple = ()) -> tuple:
    model = create(name, preset=preset, **dict(overrides))
    return numel(model), leaf_numel(model)


# ---------------------------------------------------------------- configs: the official values

def test_new_presets_are_listed():
    for name, presets in NEW.items():
        assert set(presets) <= set(list_presets(name)), name


# (n_layers, dim_feat, n_frames) of configs/h36m/MotionAGFormer-{xsmall,small,base,large}.yaml
MAGF_OFFICIAL = {"xs": (12, 64, 27), "s": (26, 64, 81), "b": (16, 128, 243), "l": (26, 128, 243)}


@pytest.mark.parametrize("preset", list(MAGF_OFFICIAL))
def test_motionagformer_variants_follow_the_official_yaml(preset):
    n_layers, dim_feat, n_frames = MAGF_OFFICIAL[preset]
    cfg = MAGF[preset]
    assert (cfg.depth, cfg.embed_dim, cfg.num_frames) == (n_layers, dim_feat, n_frames)
    # shared by all four yaml files: dim_in 3, dim_rep 512, mlp_ratio 4, num_heads 8, qkv_bias False,
    # neighbour_num 2, layer_scale_init_value 1e-5, drop_path 0.0
    assert (cfg.in_chans, cfg.dim_rep, cfg.mlp_ratio, cfg.num_heads, cfg.qkv_bias, cfg.neighbour_num,
            cfg.layer_scale_init, cfg.drop_path_rate) == (3, 512, 4.0, 8, False, 2, 1e-5, 0.0)
    assert cfg.frames_per_layer is None


def test_motionagformer_base_is_an_alias_of_b_and_unchanged():
    assert MAGF["base"] is MAGF["b"]
    assert MAGF["base"] == MotionAGFormerConfig(num_heads=8, neighbour_num=2)  # its former definition


def test_motionbert_sizes_follow_the_official_yaml():
    # configs/pretrain/MB_pretrain.yaml and MB_lite.yaml: maxlen 243, depth 5, dim_rep 512, num_heads 8
    for preset, (dim_feat, mlp_ratio) in {"full": (512, 2.0), "lite": (256, 4.0)}.items():
        cfg = MB[preset]
        assert (cfg.embed_dim, cfg.mlp_ratio) == (dim_feat, mlp_ratio)
        assert (cfg.num_frames, cfg.depth, cfg.dim_rep, cfg.num_heads, cfg.in_chans) == (243, 5, 512, 8, 3)
    assert MB["lite"] == MB["paper"]


@pytest.mark.parametrize("presets, frames_of, same_as_paper",
                         [(MHF, {"f27": 27, "f81": 81, "f243": 243, "f351": 351}, "f351"),
                          (PF, {"f9": 9, "f27": 27, "f81": 81}, "f81"),
                          (MIX, {"f27": 27, "f81": 81, "f243": 243}, "f243")])
def test_frame_presets_change_only_the_frame_count(presets, frames_of, same_as_paper):
    import dataclasses

    for preset, frames in frames_of.items():
        assert presets[preset] == dataclasses.replace(presets["paper"], num_frames=frames)
    assert presets[same_as_paper] == presets["paper"]


def test_paper_and_tiny_presets_are_unchanged():
    assert MAGF["paper"] == MotionAGFormerConfig()
    assert MAGF["tiny"] == MotionAGFormerConfig(num_frames=27, embed_dim=32, dim_rep=64, depth=4, neighbour_num=2)
    assert MB["paper"] == MotionBERTConfig()
    assert MB["tiny"] == MotionBERTConfig(num_frames=27, embed_dim=64, dim_rep=128, depth=4, num_heads=4,
                                          mlp_ratio=2.0)
    assert MHF["paper"] == MHFormerConfig()
    assert MHF["tiny"] == MHFormerConfig(num_frames=27, embed_dim=64, mlp_hidden=128, num_heads=4, mhg_depth=2,
                                         mhg_heads=3, embed_norm=False)
    assert PF["paper"] == PoseFormerConfig()
    assert PF["tiny"] == PoseFormerConfig(num_frames=27, spatial_dim=16, spatial_depth=2, depth=4, num_heads=4)
    assert MIX["paper"] == MixSTEConfig()
    assert MIX["tiny"] == MixSTEConfig(num_frames=27, embed_dim=32, depth=4, num_heads=4, drop_path_rate=0.0)
    # the paper-size counts of tests/test_parity.py (official HoT code), unchanged
    assert counts("mixste", "paper")[0] == 33_783_811
    assert counts("motionbert", "paper")[0] == 16_001_549
    assert counts("motionagformer", "paper")[0] == 11_723_811
    assert counts("mhformer", "paper")[0] == 31_516_125
    assert counts("poseformer", "paper")[0] == 9_602_885


# ---------------------------------------------------------------- exact counts (regression pins)

EXACT = {  # (model.parameters() total, leaf-module total = thop 0.1.1 `profile` params)
    ("motionagformer", "xs"): (2_241_531, 2_234_299),
    ("motionagformer", "s"): (4_817_119, 4_802_719),
    ("motionagformer", "b"): (11_723_811, 11_705_251),
    ("motionagformer", "l"): (19_007_111, 18_978_311),
    ("motionbert", "full"): (42_466_317, 42_333_197),
    ("motionbert", "lite"): (16_001_549, 15_934_989),
    ("mhformer", "f27"): (19_184_517, 19_140_291),   # with the official <= 27-frame BatchNorm embedding
    ("mhformer", "f81"): (19_837_545, 19_704_867),
    ("mhformer", "f243"): (25_165_077, 24_767_043),
    ("mhformer", "f351"): (31_516_125, 30_941_187),
    ("poseformer", "f9"): (9_563_645, 9_558_205),
    ("poseformer", "f27"): (9_573_455, 9_558_223),
    ("poseformer", "f81"): (9_602_885, 9_558_277),
    ("mixste", "f27"): (33_673_219, 33_650_691),
    ("mixste", "f81"): (33_700_867, 33_650_691),
    ("mixste", "f243"): (33_783_811, 33_650_691),
}


@pytest.mark.parametrize("name, preset", list(EXACT))
def test_exact_parameter_counts(name, preset):
    assert counts(name, preset) == EXACT[(name, preset)]


# ---------------------------------------------------------------- published figures that match

PUBLISHED = [  # (backbone, preset, overrides, figure in M as printed, decimals printed, source)
    ("motionagformer", "xs", (), 2.2, 1, "MAGF README '2.2M'"),
    ("motionagformer", "s", (), 4.8, 1, "MAGF README '4.8M'"),
    ("motionagformer", "b", (), 11.7, 1, "MAGF README '11.7M'"),
    ("motionagformer", "l", (), 19.0, 1, "MAGF README '19.0M'"),
    ("poseformer", "f81", (), 9.60, 2, "PF Table 6 '9.60'"),
    ("mixste", "f27", (), 33.7, 1, "MIX Sec. 4.4 '33.7M' (Depth 8)"),
    ("mixste", "f81", (), 33.7, 1, "MIX Sec. 4.4 '33.7M' (Depth 8)"),
    ("mixste", "f243", (("depth", 10),), 42.2, 1, "MIX Sec. 4.4 '42.2M' (Depth 10; at f27/f81 it reads 42.1)"),
]


@pytest.mark.parametrize("name, preset, overrides, figure, decimals, source", PUBLISHED,
                         ids=[f"{p[0]}-{p[1]}{'-' + str(dict(p[2])) if p[2] else ''}" for p in PUBLISHED])
def test_params_equal_the_published_figure(name, preset, overrides, figure, decimals, source):
    assert round(counts(name, preset, overrides)[0] / 1e6, decimals) == figure, source


@pytest.mark.parametrize("preset, mib", [("full", 162), ("lite", 61)])
def test_motionbert_params_match_the_released_weight_files(preset, mib):
    # README "MotionBERT (162MB)" / "MotionBERT-Lite (61MB)": fp32 weights, 4 bytes a parameter
    # (42,466,317 x 4 / 2**20 = 162.0; 16,001,549 x 4 / 2**20 = 61.04)
    assert round(counts("motionbert", preset)[0] * 4 / 2 ** 20) == mib


def test_motionbert_full_in_the_thop_convention():
    # thop's params leave out the embeddings DSTformer holds itself (temp_embed 243x512, pos_embed 17x512):
    # 42,466,317 - 124,416 - 8,704 = 42,333,197 (42.3 M), the figure thop-based comparison tables quote
    n, leaf = counts("motionbert", "full")
    assert n - leaf == 243 * 512 + 17 * 512
    assert round(leaf / 1e6, 1) == 42.3


# ---------------------------------------------------------------- published figures that do not match

MISMATCHED = [  # (backbone, preset, printed figure, decimals, ours at that precision, why)
    ("poseformer", "f9", 9.58, 2, 9.56,
     "PF Table 6 grows 0.01 M from f=9 to 27 and 0.01 M from 27 to 81; the official model grows 545 params a "
     "frame (Temporal_pos_embed T x 544 + weighted_mean Conv1d T + 1), i.e. 0.0098 M and 0.0294 M, and "
     "matches the f=81 figure only. No counting convention reproduces both (thop gives 9.56 at every f)."),
    ("poseformer", "f27", 9.59, 2, 9.57, "see poseformer-f9"),
    ("mhformer", "f27", 18.92, 2, 19.18,
     "MHF Tables 5/6 print 18.92 M at 27 frames; the official code (Vegetebird/MHFormer @ eba3cc3, "
     "model/mhformer.py) has 19,184,517 at 27 frames (ours too), thop 19.14 M. The "
     "gap grows with C in Table 6 (C=256/384/512/768: printed 4.72/10.65/18.92/42.50, official-code counts "
     "with d_hid = 2C 4.91/10.87/19.18/42.89), so it is not a fixed head or embedding left out; unexplained. "
     "The FLOPs column of the same tables does match (2 x thop MACs of a 27-frame clip, 1.03 G)."),
    ("mixste", "f243", 33.7, 1, 33.8,
     "MIX prints 33.7M for Depth 8 without an input length; at 243 frames the official model has 33,783,811 "
     "(33.8). 33.7 is what f27 / f81 give, and what thop gives at any length (33,650,691: Temporal_pos_embed "
     "not counted), but the Depth-10 figure of the same sentence, 42.2M, matches 243 frames only."),
]


@pytest.mark.parametrize("name, preset, figure, decimals, ours, why", MISMATCHED,
                         ids=[f"{m[0]}-{m[1]}" for m in MISMATCHED])
@pytest.mark.xfail(strict=True, reason="documented gap to the published figure (see MISMATCHED and the report)")
def test_params_equal_the_published_figure_known_gaps(name, preset, figure, decimals, ours, why):
    assert round(counts(name, preset)[0] / 1e6, decimals) == figure, why


@pytest.mark.parametrize("name, preset, figure, decimals, ours, why", MISMATCHED,
                         ids=[f"{m[0]}-{m[1]}" for m in MISMATCHED])
def test_measured_gap_to_the_published_figure(name, preset, figure, decimals, ours, why):
    """Pins the gap itself: fails if our count moves, or if it closes (then move the row to PUBLISHED)."""
    measured = round(counts(name, preset)[0] / 1e6, decimals)
    assert measured == ours
    assert measured != figure


def test_mhformer_f27_against_the_official_27_frame_embedding():
    # official model/mhformer.py, frames <= 27: embedding_h = Conv1d + BatchNorm1d(channel) + ReLU + Dropout;
    # the bare-conv model (f81's embedding at 27 frames) is three BatchNorm1d(512) affine pairs short of it
    bare = counts("mhformer", "f27", (("embed_norm", False),))[0]
    assert bare + 3 * 2 * 512 == EXACT[("mhformer", "f27")][0] == 19_184_517
    assert round(bare / 1e6, 2) == 19.18 != 18.92


# ---------------------------------------------------------------- every preset builds; the small ones run

@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name, preset", [("motionagformer", "xs"), ("mhformer", "f27"), ("poseformer", "f9"),
                                          ("poseformer", "f27"), ("mixste", "f27")])
def test_small_official_presets_run(name, preset):
    torch.manual_seed(0)
    model = create(name, preset=preset).eval()
    x = torch.randn(1, model.num_frames, 17, model.in_chans)
    with torch.no_grad():
        y = model(x)
    frames = 1 if getattr(model, "regresses_centre", False) else model.num_frames
    assert y.shape == (1, frames, 17, 3)
    assert torch.isfinite(y).all()


def test_mhformer_embeds_with_batch_norm_up_to_27_frames_as_the_official_code():
    """model/mhformer.py: Conv1d + BatchNorm1d + ReLU + Dropout for frames <= 27, a bare Conv1d above; so an
    official 27-frame file has embedding_h.0 / embedding_h.1 keys. tiny keeps the bare conv it was trained with."""
    from backbones import create

    def keys(preset, **overrides):
        return {k for k in create("mhformer", preset=preset, **overrides).state_dict() if k.startswith("embedding_1")}

    assert keys("f27") == {"embedding_1.0.weight", "embedding_1.0.bias", "embedding_1.1.weight", "embedding_1.1.bias",
                           "embedding_1.1.running_mean", "embedding_1.1.running_var",
                           "embedding_1.1.num_batches_tracked"}
    assert keys("f81") == keys("tiny") == {"embedding_1.weight", "embedding_1.bias"}
    assert keys("f81", embed_norm=True) == keys("f27")
