"""Training and evaluation on the device named: placement, the device-resident window bank, bit-identity of
the CPU path with the per-clip numpy pipeline it replaced, reduced precision, compile, input-pipeline
accounting, out-of-memory messages, and checkpoints that resume across devices. Every test runs on the CPU;
on a machine with a CUDA GPU the parametrised ones run there too, and the CUDA-only ones stop skipping."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import backbones
from backbones.hourglass import gather_frames
from bench.data import load_split
from bench.data.windows import WindowBank, fetch_windows, seq2frame_eval_windows, seq2seq_eval_clips, train_windows
from bench.metrics import flip_poses
from bench.config import EvalCfg
from bench.evaluate import _predict, evaluate_model, model_input
from bench.losses import mixste_loss, mpjpe_loss
from bench.train import _lr_lambda
from train_runs import run_training

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def data():
    return load_split("synthetic")


@pytest.fixture(scope="module")
def with_short(data):
    """Three full sequences plus three shorter than a 27-frame window (one of a single frame): their one
    centred window is edge-padded on both sides."""
    train, _ = data
    cut = lambda n: dataclasses.replace(train[0], pos2d=train[0].pos2d[:n], pos3d=train[0].pos3d[:n])  # noqa: E731
    return list(train[:3]) + [cut(10), cut(1), cut(26)]


def _model(kind: str = "mixste", seed: int = 0):
    """A 2-layer tiny MixSTE (seq2seq) or a cluster-pruned tiny MHFormer (seq2frame), seeded."""
    torch.manual_seed(seed)
    if kind == "mixste":
        return backbones.create_hourglass("mixste", "tiny", backbone_args={"depth": 2, "embed_dim": 16})
    return backbones.create_hourglass("mhformer", "tiny", "cluster", "none", [[1, 9]], pipeline="seq2frame")


def _train(model, seqs, **kw):
    return run_training(model, seqs, **{"batch_size": 4, **kw})


def _reference_losses(model, seqs, *, frames, stride, steps, batch_size, lr, weight_decay, seed, loss="mpjpe",
                      flip_augment=True):
    """The training loop before the WindowBank, copied from bench/train.py: a numpy fetch of each clip and a
    stack per step, then the model-input channels and the flip on CPU tensors (AdamW, cosine schedule without
    warm-up). Checked against that code's own train_model on these runs before it was replaced."""
    index = train_windows(seqs, frames, stride)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda("cosine", steps, 0, 100, 0.99))
    rng = np.random.default_rng(seed)
    objective = mpjpe_loss if loss == "mpjpe" else mixste_loss
    seq2frame = model.pipeline == "seq2frame"
    model.train()
    losses = []
    for _ in range(steps):
        pick = rng.integers(0, len(index), size=batch_size)
        x, y = fetch_windows(seqs, [index[i] for i in pick], frames)
        x, y = torch.from_numpy(model_input(x, model.backbone.in_chans)), torch.from_numpy(y)
        if flip_augment:
            mirror = torch.from_numpy(rng.random(batch_size) < 0.5)[:, None, None, None]
            x, y = torch.where(mirror, flip_poses(x), x), torch.where(mirror, flip_poses(y), y)
        if seq2frame:
            pred, stage_idx = model.forward_with_index(x, kept_only=True)
            if stage_idx:
                y = gather_frames(y, stage_idx[-1])
        else:
            pred = model(x)
        value = objective(pred, y)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        sched.step()
        losses.append(mpjpe_loss(pred.detach(), y).item() * 1000.0)
    model.eval()
    return losses


def _watch_devices(model):
    """Forward pre-hooks on every submodule recording the device type of each tensor it is given, plus a
    wrapper on forward_with_index (which evaluation calls directly); returns the list they fill."""
    seen = []

    def hook(module, args, kwargs):
        for value in [*args, *kwargs.values()]:
            if isinstance(value, torch.Tensor):
                seen.append(value.device.type)

    for module in model.modules():
        module.register_forward_pre_hook(hook, with_kwargs=True)
    real = model.forward_with_index

    def spy(x, *a, **kw):
        seen.append(x.device.type)
        return real(x, *a, **kw)

    model.forward_with_index = spy
    return seen


def _killed_at_gather(monkeypatch, n: int):
    """Make the n-th batch gather raise KeyboardInterrupt (a kill mid-run); returns a function undoing it."""
    real, calls = WindowBank.gather, {"n": 0}

    def dying(self, ids):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(self, ids)

    monkeypatch.setattr(WindowBank, "gather", dying)
    return lambda: monkeypatch.setattr(WindowBank, "gather", real)


# --- placement ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["mixste", "mhformer"])
def test_every_tensor_the_model_sees_is_on_the_device(data, device, kind):
    train, test = data
    model = _model(kind)
    seen = _watch_devices(model)
    out = _train(model, train, steps=3, device=device)
    assert out["train_steps"] == 3 and seen and set(seen) == {device}
    assert {p.device.type for p in model.parameters()} == {device}
    seen.clear()
    res = evaluate_model(model, test[:2], EvalCfg(batch_size=64), frames=model.num_frames, device=device)
    assert seen and set(seen) == {device} and res["mpjpe_mm"] > 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["mixste", "mhformer"])
def test_clips_gathered_on_the_device_predict_as_clips_built_on_the_host(data, device, kind):
    """Evaluation copies a sequence to the device once and gathers its clip grid there; the predictions are
    those of the same clips built with numpy on the host and run on the CPU."""
    seq = data[1][0]
    model = _model(kind).eval()
    grid = (seq2frame_eval_windows if kind == "mhformer" else seq2seq_eval_clips)(len(seq), model.num_frames)
    host = _predict(model, seq.pos2d[grid], 40, flip=True)
    gathered = _predict(model.to(device), torch.from_numpy(seq.pos2d), 40, flip=True, rows=grid)
    assert isinstance(gathered, np.ndarray) and gathered.shape == host.shape
    if device == "cpu":
        assert np.array_equal(gathered, host)
    else:
        assert np.allclose(gathered, host, atol=1e-4)


# --- the window bank ------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("frames, stride", [(27, 1), (27, 4), (9, 7), (1, 3)])
def test_window_bank_gathers_what_fetch_windows_returns(with_short, device, frames, stride):
    index = train_windows(with_short, frames, stride)
    bank = WindowBank(with_short, index, frames, device)
    assert len(bank) == len(index) and bank.pos2d.device.type == device
    ids = np.random.default_rng(frames * 10 + stride).integers(0, len(index), size=300)
    ids[:len(index)] = np.arange(min(300, len(index)))                # every window, including each short one
    x, y = bank.gather(ids)
    x0, y0 = fetch_windows(with_short, [index[i] for i in ids], frames)
    assert x.device.type == device and x.dtype == torch.float32 and x.shape == x0.shape
    assert torch.equal(x.cpu(), torch.from_numpy(x0)) and torch.equal(y.cpu(), torch.from_numpy(y0))


def test_window_bank_pads_a_short_sequence_on_both_sides(with_short):
    """A 10-frame sequence in a 27-frame window starts at -8: frame 0 replicated 8 times before, frame 9
    replicated 9 times after (the centred window train_windows gives it)."""
    seqs = [with_short[3]]
    (window,) = train_windows(seqs, 27, 1)
    assert window == (0, -8)
    x, _ = WindowBank(seqs, [window], 27).gather(np.array([0]))
    want = seqs[0].pos2d[[0] * 8 + list(range(10)) + [9] * 9]
    assert torch.equal(x[0], torch.from_numpy(want))


def test_window_bank_needs_windows():
    with pytest.raises(ValueError, match="pass the output of train_windows"):
        WindowBank([], [], 27)


# --- bit-identity with the numpy pipeline ----------------------------------------------------------------

@pytest.mark.parametrize("kind, loss, flip, short, stride, steps", [
    ("mixste", "mixste", True, False, 9, 30),
    ("mhformer", "mpjpe", True, False, 9, 30),
    ("mixste", "mpjpe", True, True, 2, 12),
    ("mhformer", "mpjpe", False, True, 3, 12),
])
def test_cpu_losses_are_bit_identical_to_the_numpy_pipeline(data, with_short, kind, loss, flip, short, stride, steps):
    seqs = with_short if short else data[0]
    kw = dict(frames=27, stride=stride, steps=steps, batch_size=4, lr=1e-3, weight_decay=0.01, seed=5, loss=loss,
              flip_augment=flip)
    want = _reference_losses(_model(kind), seqs, **kw)
    got = run_training(_model(kind), seqs, **kw)["train_losses_mm"]
    assert got == want                                               # exact floats, not approx


# --- precision, compile, accounting ---------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_bf16_training_runs_under_autocast_and_the_loss_falls(data, device):
    model = _model()
    dtypes = []
    first_linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    first_linear.register_forward_hook(lambda m, a, out: dtypes.append(out.dtype))
    out = _train(model, data[0], steps=60, lr=4e-3, precision="bf16", device=device)
    curve = out["train_losses_mm"]
    assert set(dtypes) == {torch.bfloat16} and len(curve) == 60 and np.isfinite(curve).all()
    assert np.mean(curve[-5:]) < 0.8 * np.mean(curve[:5])
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast, not a cast of the weights


@pytest.mark.parametrize("device", DEVICES)
def test_fp16_uses_the_grad_scaler_and_its_checkpoint_resumes(data, tmp_path, monkeypatch, device):
    train, _ = data
    scaled = []
    real_scale = torch.amp.GradScaler.scale
    monkeypatch.setattr(torch.amp.GradScaler, "scale",
                        lambda self, v: scaled.append(self.is_enabled()) or real_scale(self, v))
    whole = _train(_model(), train, steps=6, precision="fp16", device=device)
    assert scaled and all(scaled) and np.isfinite(whole["train_losses_mm"]).all()

    ck = tmp_path / "fp16.pt"
    undo = _killed_at_gather(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        _train(_model(), train, steps=6, precision="fp16", device=device, checkpoint=ck, checkpoint_every=2)
    undo()
    saved = torch.load(ck, weights_only=True)
    assert saved["step"] == 2 and saved["grad_scaler"]["scale"] > 0
    loaded = []
    real_load = torch.amp.GradScaler.load_state_dict
    monkeypatch.setattr(torch.amp.GradScaler, "load_state_dict", lambda self, s: loaded.append(s) or real_load(self, s))
    resumed = _train(_model(), train, steps=6, precision="fp16", device=device, checkpoint=ck, checkpoint_every=2)
    assert loaded == [saved["grad_scaler"]]
    assert resumed["train_losses_mm"] == pytest.approx(whole["train_losses_mm"], rel=1e-6 if device == "cpu" else 1e-3)


def test_fp32_and_bf16_checkpoints_carry_no_scaler(data, tmp_path):
    for precision in ("fp32", "bf16"):
        ck = tmp_path / f"{precision}.pt"
        _train(_model(), data[0], steps=2, precision=precision, checkpoint=ck, checkpoint_every=2)
        assert "grad_scaler" not in torch.load(ck, weights_only=True)


@pytest.mark.parametrize("device", DEVICES)
def test_compile_times_its_first_step_apart_and_saves_plain_keys(data, tmp_path, monkeypatch, device):
    compiled = []
    real_compile = torch.compile

    def eager_compile(fn, **kw):  # inductor would take minutes on a small CPU; dynamo's graphs run eagerly
        compiled.append(fn)
        return real_compile(fn, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    torch._dynamo.reset()
    model = _model()
    ck = tmp_path / "compiled.pt"
    out = _train(model, data[0], steps=4, compile=True, device=device, checkpoint=ck, checkpoint_every=2)
    assert len(compiled) == 1 and out["train_steps"] == 4
    assert out["train_compile_s"] > 0 and out["train_s"] > 0 and 0 <= out["train_data_share"] <= 1
    keys = list(torch.load(ck, weights_only=True)["model"]) + list(model.state_dict())
    assert keys and not any("_orig_mod" in k for k in keys)
    plain = _train(_model(), data[0], steps=4, device=device)
    assert "train_compile_s" not in plain
    assert out["train_losses_mm"] == pytest.approx(plain["train_losses_mm"], rel=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_train_data_share_is_a_fraction_of_train_time(data, device):
    out = _train(_model(), data[0], steps=5, device=device)
    assert 0 < out["train_data_s"] <= out["train_s"]
    assert 0 <= out["train_data_share"] <= 1
    assert out["train_data_share"] == pytest.approx(out["train_data_s"] / out["train_s"])


def test_no_steps_reports_no_data_time(data):
    out = _train(_model(), data[0], steps=0)
    assert out["train_data_s"] == 0.0 and out["train_data_share"] is None and out["train_losses_mm"] == []


# --- out of memory ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                   RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB")])
def test_out_of_memory_is_one_line_naming_the_batch_size(data, monkeypatch, device, error):
    train, test = data
    model = _model()
    calls = {"n": 0}
    real_forward = model.forward

    def forward(x):
        calls["n"] += 1
        if calls["n"] == 3:
            raise error
        return real_forward(x)

    monkeypatch.setattr(model, "forward", forward)
    with pytest.raises(ValueError) as e:
        _train(model, train, steps=5, device=device)
    assert str(e.value) == f"out of memory at batch 3 on {device} while training; lower train.batch_size"
    assert e.value.__cause__ is None and e.value.__suppress_context__

    monkeypatch.setattr(model, "forward", real_forward)
    real_fwi = model.forward_with_index
    calls["n"] = 0

    def forward_with_index(x, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise error
        return real_fwi(x, *a, **kw)

    monkeypatch.setattr(model, "forward_with_index", forward_with_index)
    with pytest.raises(ValueError) as e:
        evaluate_model(model, test, EvalCfg(batch_size=2, flip=False), frames=model.num_frames, device=device)
    assert str(e.value) == f"out of memory at batch 2 on {device} while evaluating; lower eval.batch_size"


def test_other_runtime_errors_pass_through(data, monkeypatch):
    model = _model()
    monkeypatch.setattr(model, "forward", lambda x: (_ for _ in ()).throw(RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        _train(model, data[0], steps=2)


# --- devices and checkpoints -------------------------------------------------------------------------------

def test_device_and_precision_are_checked_first(data):
    with pytest.raises(ValueError, match="unknown train.precision 'fp8'; valid: fp32, bf16, fp16"):
        _train(_model(), data[0], precision="fp8")
    with pytest.raises(ValueError, match="unknown device 'gpu0'; valid: auto, cpu, cuda, cuda:N"):
        _train(_model(), data[0], device="gpu0")
    with pytest.raises(ValueError, match="unknown device 'meta'"):
        evaluate_model(_model(), data[1], frames=27, device="meta")
    with pytest.raises(ValueError, match="cuda:99"):
        _train(_model(), data[0], device="cuda:99")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_without_a_gpu_says_use_cpu(data):
    with pytest.raises(ValueError, match="device=cuda but this machine has no CUDA GPU .*; use device=cpu"):
        _train(_model(), data[0], device="cuda")


def test_a_cpu_resume_ignores_gpu_only_checkpoint_keys(data, tmp_path, monkeypatch):
    """A checkpoint written on a GPU carries the CUDA generators' states; resuming it on a CPU uses the rest."""
    train, _ = data
    whole = _train(_model(), train, steps=6)
    ck = tmp_path / "run.pt"
    undo = _killed_at_gather(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        _train(_model(), train, steps=6, checkpoint=ck, checkpoint_every=2)
    undo()
    state = torch.load(ck, weights_only=True)
    assert "cuda_rng" not in state                                   # a CPU run saves none
    torch.save({**state, "cuda_rng": [torch.zeros(16, dtype=torch.uint8)]}, ck)
    resumed = _train(_model(), train, steps=6, checkpoint=ck, checkpoint_every=2)
    assert resumed["train_losses_mm"] == whole["train_losses_mm"]


@needs_cuda
def test_cuda_training_feeds_every_batch_on_the_gpu(data):
    train, test = data
    model = _model("mhformer")

    def on_gpu(module, args):
        for x in args:
            if isinstance(x, torch.Tensor):
                assert x.device.type == "cuda", (type(module).__name__, x.device)

    for module in model.modules():
        module.register_forward_pre_hook(on_gpu)
    out = _train(model, train, steps=4, device="cuda")
    assert out["train_steps"] == 4 and all(p.is_cuda for p in model.parameters())
    res = evaluate_model(model, test[:2], frames=model.num_frames, device="cuda")
    assert np.isfinite(res["mpjpe_mm"])


@needs_cuda
def test_cuda_evaluation_matches_the_cpu(data):
    _, test = data
    model = _model()
    gpu = evaluate_model(model, test, frames=model.num_frames, device="cuda")
    cpu = evaluate_model(model, test, frames=model.num_frames, device="cpu")
    for key in ("mpjpe_mm", "p_mpjpe_mm", "mpjve_mm"):
        assert gpu[key] == pytest.approx(cpu[key], rel=1e-4), key


@needs_cuda
def test_a_cuda_checkpoint_resumes_on_the_cpu(data, tmp_path, monkeypatch):
    train, _ = data
    ck = tmp_path / "gpu.pt"
    whole = _train(_model(), train, steps=6, device="cuda")
    undo = _killed_at_gather(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        _train(_model(), train, steps=6, device="cuda", checkpoint=ck, checkpoint_every=2)
    undo()
    state = torch.load(ck, map_location="cpu", weights_only=True)
    assert state["step"] == 2 and "cuda_rng" in state
    model = _model()
    resumed = _train(model, train, steps=6, device="cpu", checkpoint=ck, checkpoint_every=2)
    assert resumed["train_steps"] == 6 and all(not p.is_cuda for p in model.parameters())
    assert resumed["train_losses_mm"][:2] == state["losses"]
    assert resumed["train_losses_mm"] == pytest.approx(whole["train_losses_mm"], rel=1e-3)


@needs_cuda
def test_a_cuda_run_resumes_on_the_gpu_like_an_uninterrupted_one(data, tmp_path, monkeypatch):
    train, _ = data
    ck = tmp_path / "gpu.pt"
    whole = _train(_model(), train, steps=6, device="cuda", precision="fp16")
    undo = _killed_at_gather(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        _train(_model(), train, steps=6, device="cuda", precision="fp16", checkpoint=ck, checkpoint_every=2)
    undo()
    resumed = _train(_model(), train, steps=6, device="cuda", precision="fp16", checkpoint=ck, checkpoint_every=2)
    assert resumed["train_losses_mm"] == pytest.approx(whole["train_losses_mm"], rel=1e-3)


@needs_cuda
def test_cuda_window_bank_is_staged_through_pinned_memory(data, monkeypatch):
    pinned = []
    real_pin = torch.Tensor.pin_memory
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a: pinned.append(self.shape) or real_pin(self, *a))
    index = train_windows(data[0], 27, 9)
    bank = WindowBank(data[0], index, 27, "cuda")
    assert bank.pos2d.is_cuda and bank.start.is_cuda and len(pinned) == 5
    x, y = bank.gather(np.arange(8))
    assert x.is_cuda and y.is_cuda
