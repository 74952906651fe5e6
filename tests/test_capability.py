"""What the timing path asks of the CPU, and what it does with each answer, on every CPU.

The machines differ (an AMD EPYC with AVX2 only: no oneDNN bf16 linear, no bf16 arithmetic; an Intel
Xeon with AMX: both), so each answer is also forced: in this process by replacing the probe, and in a
subprocess with oneDNN's own `ONEDNN_MAX_CPU_ISA=AVX2`, which makes the larger CPU answer as the AVX2
one does. What a test asserts about the real oneDNN path is asserted where the probe finds it."""
import json
import logging
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.measure import capability, fastpath, floor
from bench.measure.capability import UnsupportedPrecision, check_precision, precision_support
from bench.measure.speed import measure_speed

pytestmark = pytest.mark.usefixtures("one_thread")
CALLS = [("linear", torch.Size([64, 32]), torch.Size([48, 32]), True, {})]


def _make(b):
    return (torch.randn(b, 27, 17, 2),)


def _tiny():
    from backbones import create

    return create("mixste", preset="tiny").eval()


def _onednn_forbidden(*_a, **_k):
    raise AssertionError("oneDNN's linear was called where the probe said it does not exist")


@pytest.fixture
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(capability, "_warned", set())


def test_the_probe_agrees_with_creating_the_primitive():
    """The probe's answer is what calling oneDNN's linear on a real shape does here."""
    x, w = torch.randn(3, 40), torch.randn(24, 40)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        try:
            with torch.inference_mode():
                capability.onednn_linear(x.to(dtype), w.to(dtype), None)
            works = True
        except RuntimeError:
            works = False
        assert capability.onednn_linear_works(dtype) is works, dtype


def test_bf16_is_native_only_with_bf16_arithmetic_and_onednn():
    support = precision_support("bf16")
    native = bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    assert support.native is native and support.isa == torch.backends.cpu.get_cpu_capability()
    assert support.emulated is not (native and capability.onednn_linear_works(torch.bfloat16))
    assert precision_support("fp32").emulated is False and precision_support("fp32").label() == "fp32"


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_without_onednn_or_arithmetic_the_copy_runs_on_torch_kernels_labelled_emulated(
        monkeypatch, caplog, fresh_warnings, precision):
    """The AVX2-only CPU's answers, forced on any CPU: no oneDNN linear and no arithmetic of the dtype. The
    timing is an ok row on torch's own kernels, named emulated, with one warning; oneDNN is never called,
    by the path choice, the copy or the floor."""
    monkeypatch.setattr(capability, "onednn_linear_works", lambda dtype: dtype == torch.float32)
    monkeypatch.setattr(fastpath, "onednn_linear_works", capability.onednn_linear_works)
    monkeypatch.setattr(floor, "onednn_linear_works", capability.onednn_linear_works)
    monkeypatch.setattr(capability, "_has_reduced_arithmetic", lambda dtype: dtype == torch.float32)
    monkeypatch.setattr(capability, "onednn_linear", _onednn_forbidden)
    monkeypatch.setattr(fastpath, "onednn_linear", _onednn_forbidden)
    monkeypatch.setattr(floor, "onednn_linear", _onednn_forbidden)
    with caplog.at_level(logging.WARNING, logger="bench.measure.capability"):
        rows = [measure_speed(_tiny(), _make, frames_out_per_clip=27, batch_size=2, warmup=0, iters=1, repeats=2,
                              precision=precision) for _ in range(2)]
    for row in rows:
        assert row["speed_path"].startswith(f"{precision} weights and activations, emulated (this CPU (")
        assert f"has no {precision} arithmetic: torch's own kernels, widened to fp32), aten linear" in row["speed_path"]
        assert row["frames_per_s"] > 0 and row["floor_s"] > 0 and row["precision"] == precision
    warned = [r.getMessage() for r in caplog.records if "emulated" in r.getMessage()]
    assert len(warned) == 1 and "\n" not in warned[0]  # once per precision and process, one line
    assert warned[0].startswith(f"{precision} timing is emulated") and "says little about deployment" in warned[0]


def test_arithmetic_without_a_onednn_linear_is_emulated_too(monkeypatch, fresh_warnings):
    """A CPU with bf16 instructions whose oneDNN is capped below them (ONEDNN_MAX_CPU_ISA): torch's
    bf16 products then skip oneDNN, so the timing is not the deployed one either, and says why."""
    monkeypatch.setattr(capability, "onednn_linear_works", lambda dtype: dtype == torch.float32)
    monkeypatch.setattr(capability, "_has_reduced_arithmetic", lambda dtype: True)
    support = precision_support("bf16")
    assert support.emulated and "oneDNN has no bf16 linear here" in support.label()


def test_a_native_cpu_times_the_onednn_path_where_it_wins(monkeypatch, fresh_warnings):
    """The Intel Xeon with AMX's answers, forced on any CPU (oneDNN's op stood in by torch's linear, so it
    runs here): not emulated, and the path choice times oneDNN and takes it when it wins."""
    monkeypatch.setattr(capability, "onednn_linear_works", lambda dtype: True)
    monkeypatch.setattr(fastpath, "onednn_linear_works", lambda dtype: True)
    monkeypatch.setattr(capability, "_has_reduced_arithmetic", lambda dtype: True)
    called = []
    monkeypatch.setattr(fastpath, "onednn_linear", lambda x, w, b: called.append(x.dtype) or F.linear(x, w, b))
    times = iter([2.0, 1.0])  # aten, then "oneDNN"
    monkeypatch.setattr(fastpath, "_best_of", lambda fn, repeats=5: (fn(), next(times))[1])
    assert fastpath.gemm_path(CALLS, torch.bfloat16) == "onednn" and called == [torch.bfloat16]
    times = iter([2.0, 1.0])
    run, (xb,), label = fastpath.timing_model(_tiny(), _make(2), "bf16", "cpu", attention=False)
    assert label == "bf16 weights and activations, oneDNN linear" and xb.dtype == torch.bfloat16
    assert any(isinstance(m, fastpath.OneDNNLinear) for m in run.modules())
    called.clear()
    with torch.inference_mode():
        run(xb)
    assert called and set(called) == {torch.bfloat16}


def test_no_kernel_for_the_precision_is_refused_before_any_forward(monkeypatch):
    """Where torch's own kernels fail on an op the models use, no path works: one line naming the op and
    the fix, raised before the model is run or copied."""
    monkeypatch.setattr(capability, "torch_kernel_failure",
                        lambda dtype: None if dtype == torch.float32 else '"addmm" not implemented for \'Half\'')

    class Counter(nn.Module):
        calls = 0

        def forward(self, x):
            Counter.calls += 1
            return x

    with pytest.raises(UnsupportedPrecision) as err:
        measure_speed(Counter(), _make, frames_out_per_clip=1, precision="fp16")
    assert Counter.calls == 0 and isinstance(err.value, ValueError)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("speed.precision=fp16 cannot run on this CPU (")
    assert "not implemented for 'Half'" in msg and "use speed.precision=fp32" in msg
    assert check_precision("fp32").refusal is None


def test_torch_kernels_run_every_precision_here():
    """On both CPUs this project runs on, torch 2.13's own kernels run bf16 and fp16: nothing is refused."""
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        assert capability.torch_kernel_failure(dtype) is None, dtype


def test_records_name_the_cpu_isa_and_its_features():
    from bench.cell import environment

    env = environment()
    assert env["cpu_isa"] == torch.backends.cpu.get_cpu_capability()
    assert ("avx2" in env["cpu_features"].split(",")) is bool(torch.cpu._is_avx2_supported())


def _vptbench(*args, env=None, code=None, timeout=300):
    prefix = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "bench.cli", *args]
    return subprocess.run(prefix, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_a_bf16_speed_cell_is_an_ok_record_naming_the_emulated_path(tmp_path):
    """The issue's cell, end to end, with oneDNN capped at AVX2 (a no-op on the AVX2-only CPU, the AVX2
    answers on a larger one): exit 0, an ok record whose speed_path names the emulated path, one warning."""
    store = tmp_path / "store"
    proc = _vptbench("run", "backbone=mixste", "preset=tiny", "metrics=[speed]", "speed.precision=bf16",
                     "speed.repeats=2", "speed.iters=1", f"store={store}", env={"ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    (record,) = [json.loads(p.read_text()) for p in store.glob("*.json")]
    assert record["status"] == "ok" and record["frames_per_s"] > 0 and record["speed_precision"] == "bf16"
    assert "bf16 weights and activations, emulated (" in record["speed_path"]
    assert "aten linear" in record["speed_path"] and record["env"]["cpu_isa"]
    assert sum("bf16 timing is emulated" in line for line in proc.stderr.splitlines()) == 1


def test_onednn_capped_at_avx2_has_no_bf16_linear():
    """oneDNN's own setting gives either CPU the AVX2 answer, so the subprocess test above takes the
    fallback on both."""
    code = ("import torch; from bench.measure.capability import onednn_linear_works as w; "
            "print(w(torch.float32), w(torch.bfloat16))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert proc.returncode == 0 and proc.stdout.split() == ["True", "False"], proc.stderr


def test_a_precision_no_kernel_runs_is_refused_before_compute_from_the_cli(tmp_path):
    """`vptbench run` with such a precision: exit 2, one line, nothing written (the probe is forced to fail in
    the CLI's process)."""
    code = ("import sys, torch; import bench.measure.capability as c; "
            "c.torch_kernel_failure = lambda d: None if d == torch.float32 else 'linear: no bf16 kernel'; "
            "from bench.cli import main; sys.exit(main(sys.argv[1:]))")
    store = tmp_path / "store"
    proc = _vptbench("run", "backbone=mixste", "preset=tiny", "metrics=[params,speed]", "speed.precision=bf16",
                     f"store={store}", code=code)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        f"vptbench: error: speed.precision=bf16 cannot run on this CPU ({capability.cpu_isa()}): torch's linear: "
        "no bf16 kernel; use speed.precision=fp32 or a machine with bf16 kernels"]
    assert not store.exists() or not list(store.glob("*.json"))
