"""Training objective, schedules, seeding, checkpoint/resume, flip TTA, and finetune/zeroshot cells."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

import bench.cell
import bench.train
from bench.config import BackboneCfg, Config, DataCfg, PresetCfg, PrunerCfg, RecovererCfg, TrainCfg
from bench.data import load_split
from bench.data.windows import WindowBank
from bench.metrics import flip_poses
from bench.evaluate import _predict
from bench.losses import MIXSTE_JOINT_WEIGHTS, mixste_loss
from bench.train import _lr_lambda
from train_runs import run_training

W = np.array(MIXSTE_JOINT_WEIGHTS)


def _cfg(tmp_path=None, pruner="none", recoverer="interpolation", schedule=None, steps=4, **kw):
    sched = schedule if schedule is not None else ([] if pruner == "none" else [[1, 9]])
    # a 2-layer tiny MixSTE keeps every test here fast on 2 cores
    return Config(backbone=BackboneCfg("mixste", {"depth": 2, "embed_dim": 16}), preset=PresetCfg("tiny"), data=DataCfg("synthetic"),
                  pruner=PrunerCfg(pruner), recoverer=RecovererCfg(recoverer), schedule=sched, metrics=["accuracy"],
                  train=TrainCfg(steps=steps, progress=False, checkpoint_every=2), store=str(tmp_path), **kw)


@pytest.fixture(scope="module")
def data():
    return load_split("synthetic")


def _train(model, seqs, **kw):
    return run_training(model, seqs, **{"batch_size": 2, **kw})


def test_mixste_loss_by_hand():
    target = torch.randn(2, 1, 17, 3).expand(2, 5, 17, 3)            # a static pose
    offset = torch.tensor([0.03, 0.04, 0.0])                          # 5 cm on every joint
    # static offset: no motion, so only the weighted MPJPE term (root zeroed -> contributes 0)
    assert mixste_loss(target + offset, target).item() == pytest.approx(0.05 * W[1:].sum() / 17, rel=1e-5)
    # drift of d per frame: tc = mean(w_j d_c^2) over joints and axes (root 0), vel = |d| over 16/17 joints
    d = torch.tensor([0.01, 0.0, 0.0])
    drift = target + torch.arange(5.0)[None, :, None, None] * d
    err = (drift - target)[..., 1:, :].norm(dim=-1)                   # (2, 5, 16)
    wmpjpe = (torch.from_numpy(W[1:]).float() * err).sum(-1).mean() / 17
    tc = 0.01 ** 2 * W[1:].sum() / (17 * 3)
    vel = 0.01 * 16 / 17
    want = wmpjpe.item() + 0.5 * tc + 2.0 * vel
    assert mixste_loss(drift, target).item() == pytest.approx(want, rel=1e-5)
    assert mixste_loss(drift, target, tc_weight=0.0, vel_weight=0.0).item() == pytest.approx(wmpjpe.item(), rel=1e-5)


def test_lr_schedules():
    epoch = _lr_lambda("epoch", 100, warmup_steps=2, epoch_steps=3, lr_decay=0.5)
    assert [epoch(s) for s in range(7)] == pytest.approx([0.5, 1, 1, 0.5, 0.5, 0.5, 0.25])
    cosine = _lr_lambda("cosine", 10, warmup_steps=0, epoch_steps=3, lr_decay=0.5)
    assert [cosine(0), cosine(5)] == pytest.approx([1.0, 0.5])
    with pytest.raises(ValueError, match="valid: cosine, epoch"):
        _lr_lambda("step", 10, 0, 1, 1.0)


def test_same_seed_same_curve_and_resume_matches_uninterrupted(data, tmp_path, monkeypatch):
    train, _ = data

    def fresh():
        torch.manual_seed(0)
        return bench.cell.build_model(_cfg(tmp_path))

    a, b = fresh(), fresh()
    ra = _train(a, train, loss="mixste", steps=6)
    rb = _train(b, train, loss="mixste", steps=6)
    assert ra["train_losses_mm"] == rb["train_losses_mm"] and len(ra["train_losses_mm"]) == 6
    assert _train(fresh(), train, loss="mixste", steps=6, seed=1)["train_losses_mm"] != ra["train_losses_mm"]

    ck = tmp_path / "run.pt"
    calls = {"n": 0}
    real_gather = WindowBank.gather

    def dying_gather(self, ids):
        calls["n"] += 1
        if calls["n"] == 4:                                          # killed during step 4 (after the step-2 save)
            raise KeyboardInterrupt
        return real_gather(self, ids)

    c = fresh()
    monkeypatch.setattr(WindowBank, "gather", dying_gather)
    with pytest.raises(KeyboardInterrupt):
        _train(c, train, loss="mixste", steps=6, checkpoint=ck, checkpoint_every=2)
    monkeypatch.setattr(WindowBank, "gather", real_gather)
    assert torch.load(ck, weights_only=True)["step"] == 2
    rc = _train(fresh(), train, loss="mixste", steps=6, checkpoint=ck, checkpoint_every=2)
    assert rc["train_losses_mm"] == ra["train_losses_mm"]
    final = bench.cell.build_model(_cfg(tmp_path))
    final.load_state_dict(torch.load(ck, weights_only=True)["model"])
    for (name, p), q in zip(a.state_dict().items(), final.state_dict().values()):
        assert torch.equal(p, q), name


def test_minutes_budget_stops_early(data, tmp_path):
    model = bench.cell.build_model(_cfg(tmp_path))
    out = _train(model, data[0], steps=50, minutes=1e-9)
    assert out["train_steps"] == 1 and out["train_stop"] == "minutes"


def test_flip_pass_reuses_the_plain_pass_indices(tmp_path):
    torch.manual_seed(0)
    model = bench.cell.build_model(_cfg(tmp_path, pruner="motion")).eval()
    x = torch.randn(3, model.num_frames, 17, 2)
    calls = []
    real = model.forward_with_index

    def spy(inp, indices=None, kept_only=False):
        out = real(inp, indices=indices, kept_only=kept_only)
        calls.append((indices, out[1]))
        return out

    model.forward_with_index = spy
    got = _predict(model, x.numpy(), batch_size=8, flip=True)
    (none, kept), (replayed, kept_f) = calls
    assert none is None and replayed is kept and torch.equal(kept_f[0], kept[0])
    with torch.no_grad():
        plain = real(x)[0]
        mirrored = real(flip_poses(x), indices=kept)[0]
    assert np.allclose(got, (0.5 * (plain + flip_poses(mirrored))).numpy(), atol=1e-6)
    assert not np.allclose(got, plain.numpy(), atol=1e-4)                  # the flip pass changed the result


def test_load_baseline_tolerates_only_the_pruned_models_extras(tmp_path):
    base = bench.cell.build_model(_cfg(tmp_path)).state_dict()
    pruned = bench.cell.build_model(_cfg(tmp_path, pruner="cluster", recoverer="attention"))
    bench.cell.load_baseline(pruned, base)
    assert all(torch.equal(pruned.state_dict()[k], v) for k, v in base.items())
    with pytest.raises(ValueError, match="unexpected"):
        bench.cell.load_baseline(pruned, {**base, "extra.weight": torch.zeros(1)})
    first = next(iter(base))
    with pytest.raises(ValueError, match="missing"):
        bench.cell.load_baseline(pruned, {k: v for k, v in base.items() if k != first})


def test_mode_validation():
    with pytest.raises(ValueError, match="mode=zeroshot needs parameter-free") as e:
        _cfg(pruner="cluster", recoverer="attention", mode="zeroshot")
    assert len(str(e.value).splitlines()) == 1
    assert _cfg(pruner="none", mode="finetune").mode == "scratch"           # the baseline is canonical
    assert _cfg(pruner="uniform", mode="zeroshot").mode == "zeroshot"
    with pytest.raises(ValueError, match="valid: scratch, finetune, zeroshot"):
        _cfg(mode="pretrained")
    with pytest.raises(ValueError, match="valid: mpjpe, mixste"):
        Config(backbone=BackboneCfg("mixste"), preset=PresetCfg("tiny"), train=TrainCfg(loss="l1"))
    ids = {m: json.dumps(_cfg(pruner="uniform", mode=m).cell_identity(), sort_keys=True) for m in ("finetune", "zeroshot")}
    assert ids["finetune"] != ids["zeroshot"]


def test_finetune_and_zeroshot_share_one_cached_baseline(tmp_path, monkeypatch):
    trained = []
    real = bench.cell._train
    monkeypatch.setattr(bench.cell, "_train", lambda cfg, *a: trained.append(cfg.pruner.name) or real(cfg, *a))
    fine = bench.cell.run_cell(_cfg(tmp_path, pruner="uniform", mode="finetune"))
    zero = bench.cell.run_cell(_cfg(tmp_path, pruner="uniform", mode="zeroshot"))
    base = bench.cell.run_cell(_cfg(tmp_path))
    assert trained == ["none", "uniform"]                                   # the baseline was trained once
    assert [r["status"] for r in (fine, zero, base)] == ["ok"] * 3
    assert fine["baseline_key"] == zero["baseline_key"] == base["baseline_key"]
    assert len(list((tmp_path / "checkpoints").glob("*.pt"))) == 1         # resume files cleaned up
    assert zero["train_steps"] == 0 and fine["train_steps"] == 4 and base["train_steps"] == 4
    assert zero["mode"] == "zeroshot" and fine["key"] != zero["key"]
    for r in (fine, zero, base):
        assert r["mpjpe_mm"] > 0 and r["p_mpjpe_mm"] > 0 and r["mpjve_mm"] > 0
    assert zero["mpjpe_mm"] != fine["mpjpe_mm"]


def test_motionagformer_frame_sized_norms_start_from_the_baseline_mean(tmp_path):
    """Its temporal GCN has a BatchNorm over frames: 27 channels in the baseline, 9 after pruning to 9.
    finetune and zeroshot cells run, and each kept slot holds the baseline's mean over frames."""
    def cfg(**kw):
        return dataclasses.replace(_cfg(tmp_path, **kw), backbone=BackboneCfg("motionagformer", {"depth": 2, "embed_dim": 16}))

    zero = bench.cell.run_cell(cfg(pruner="cluster", schedule=[[1, 9]], mode="zeroshot"))
    fine = bench.cell.run_cell(cfg(pruner="cluster", schedule=[[1, 9]], mode="finetune"))
    assert (zero["status"], fine["status"]) == ("ok", "ok"), (zero.get("error"), fine.get("error"))
    state = torch.load(next((tmp_path / "checkpoints").glob("*.pt")), weights_only=True)["model"]
    model = bench.cell.build_model(cfg(pruner="cluster", schedule=[[1, 9]], mode="zeroshot"))
    bench.cell.load_baseline(model, state)
    key = "backbone.layers.1.graph_temporal.mixer.batch_norm.running_var"
    assert state[key].shape == (27,) and torch.allclose(model.state_dict()[key], state[key].mean().expand(9))
    assert torch.equal(model.state_dict()[key.replace(".1.", ".0.")], state[key.replace(".1.", ".0.")])  # before pruning


def test_flip_augmentation_mirrors_input_and_target_together(data, tmp_path, monkeypatch):
    """Every training clip is either the window as sampled or its mirror, 2D input and 3D target alike;
    both occur; switched off, nothing is mirrored."""
    train, _ = data
    fed = []
    real_objective = bench.train.mpjpe_loss
    model = bench.cell.build_model(_cfg(tmp_path))
    real_forward = model.forward

    def spy_forward(x, *a, **kw):
        fed.append([x.detach().clone()])
        return real_forward(x, *a, **kw)

    def spy_loss(pred, y):
        if pred.requires_grad and len(fed[-1]) == 1:                # the objective call, not the logging one
            fed[-1].append(y.detach().clone())
        return real_objective(pred, y)

    sampled = []
    real_gather = WindowBank.gather
    monkeypatch.setattr(WindowBank, "gather", lambda self, ids: sampled.append(real_gather(self, ids)) or sampled[-1])
    monkeypatch.setattr(model, "forward", spy_forward)
    monkeypatch.setattr(bench.train, "mpjpe_loss", spy_loss)
    _train(model, train, steps=8, batch_size=4)
    kinds = []
    for (x, y), (x0, y0) in zip(fed, sampled):
        for i in range(len(x)):
            plain = torch.equal(x[i], x0[i]) and torch.equal(y[i], y0[i])
            mirrored = torch.allclose(x[i], flip_poses(x0[i])) and torch.allclose(y[i], flip_poses(y0[i]))
            assert plain != mirrored, "a clip was neither the sampled window nor its mirror (or input/target disagree)"
            kinds.append(mirrored)
    assert len(kinds) == 32 and 0 < sum(kinds) < 32

    fed.clear(), sampled.clear()
    _train(model, train, steps=3, batch_size=4, flip_augment=False)
    assert all(torch.equal(x, x0) for (x, *_), (x0, _) in zip(fed, sampled))


def test_flip_augmentation_needs_the_h36m_skeleton(tmp_path):
    model = bench.cell.build_model(_cfg(tmp_path))
    model.backbone.num_joints = 16                                     # as a model of another skeleton would say
    with pytest.raises(ValueError, match="train.flip_augment=false"):
        _train(model, [], steps=2)


def test_mhformer_epoch_decay_is_large_every_fifth_epoch():
    """MHFormer's loop: after epoch e (1-based), lr x 0.5 if e % 5 == 0 else x 0.95."""
    f = _lr_lambda("epoch", 10 ** 6, warmup_steps=0, epoch_steps=10, lr_decay=0.95, lr_decay_large=0.5,
                   lr_decay_large_every=5)
    lr, want = 1.0, []
    for epoch in range(1, 13):
        want.append(lr)                                               # the rate used during this epoch
        lr *= 0.5 if epoch % 5 == 0 else 0.95
    assert [f(10 * e + 3) for e in range(12)] == pytest.approx(want)


def test_epoch_budget_and_adam_amsgrad(data, tmp_path, monkeypatch):
    train, _ = data
    made = []
    real_adam = torch.optim.Adam
    monkeypatch.setattr(torch.optim, "Adam", lambda params, **kw: made.append(kw) or real_adam(params, **kw))
    model = bench.cell.build_model(_cfg(tmp_path))
    windows = len(bench.train.train_windows(train, model.num_frames, 9))
    out = _train(model, train, steps=1, epochs=0.5, epoch_steps=0, batch_size=16, optimizer="adam", amsgrad=True)
    per_epoch = math.ceil(windows / 16)                               # epoch_steps=0: one pass over the windows
    assert per_epoch > 2 and out["train_steps"] == math.ceil(0.5 * per_epoch)   # epochs override steps
    assert made == [dict(lr=1e-3, weight_decay=0.01, amsgrad=True)]
    with pytest.raises(ValueError, match="valid: adamw, adam"):
        _train(model, train, optimizer="sgd")


@pytest.mark.parametrize("recipe, expect", [
    ("mixste", dict(optimizer="adamw", lr=4e-5, weight_decay=0.1, lr_decay=0.99, epochs=160, batch_size=4,
                    loss="mixste", lr_decay_large_every=0, stride=243)),
    ("mhformer", dict(optimizer="adam", amsgrad=True, lr=1e-3, weight_decay=0.0, lr_decay=0.95, lr_decay_large=0.5,
                      lr_decay_large_every=5, epochs=20, batch_size=128, loss="mpjpe", stride=1)),
])
def test_paper_recipes_compose(recipe, expect):
    from bench.compose import compose_cells as _compose_all

    (cfg,) = _compose_all([f"recipe={recipe}", "metrics=[accuracy]"], multirun=False)
    assert cfg.data.train_stride == expect.pop("stride")
    assert cfg.train.lr_schedule == "epoch" and cfg.train.epoch_steps == 0 and cfg.train.flip_augment
    assert {k: getattr(cfg.train, k) for k in expect} == expect


def test_options_at_their_neutral_value_keep_existing_keys():
    """Adding a training option must not re-key every stored cell: at the value that reproduces the old
    behaviour it is left out of the identity. The keys below are those of records written before
    train.optimizer/amsgrad/epochs/lr_decay_large existed; if this fails, a new option changed every
    cell's key: list it in NEUTRAL_TRAIN_OPTIONS, or update the keys on purpose."""
    from bench.store import cell_key

    common = dict(backbone=BackboneCfg("mixste"), preset=PresetCfg("tiny"), metrics=["accuracy"])
    base = Config(train=TrainCfg(loss="mpjpe"), **common)                  # the default loss then
    pruned = Config(pruner=PrunerCfg("cluster"), recoverer=RecovererCfg("interpolation"), schedule=[[1, 9]],
                    mode="finetune", train=TrainCfg(finetune_steps=300, loss="mpjpe"), **common)
    assert (cell_key(base.cell_identity()), cell_key(pruned.cell_identity())) == ("679b3b2e1031524a", "8695f5252e751059")
    # the pruned seq2seq cell is re-keyed on purpose: the official protocol (the default) re-prunes the flip
    # pass, where records before eval.flip_selection replayed the plain pass's selection; asking for that
    # gives the old key back
    replayed = dataclasses.replace(pruned, eval=dataclasses.replace(pruned.eval, flip_selection="reuse"))
    assert cell_key(replayed.cell_identity()) == "c03b01a5b1b78602"
    assert "optimizer" not in base.cell_identity()["train"]
    mh = Config(train=TrainCfg(optimizer="adam", amsgrad=True, lr_decay_large_every=5), **common)
    assert {"optimizer", "amsgrad", "lr_decay_large", "lr_decay_large_every"} <= set(mh.cell_identity()["train"])
    assert cell_key(mh.cell_identity()) != cell_key(base.cell_identity())
