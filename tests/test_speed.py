"""Speed measurement: structure and bookkeeping only. No wall-clock thresholds: timings on a shared
2-core machine are not reproducible, so only relations between the reported fields are asserted."""
import pytest
import torch
import torch.nn as nn

from bench.measure.speed import SPEED_FIELDS, measure_speed, measure_speed_sweep


def _make(b):
    return (torch.randn(b, 27, 17, 2),)


class Recorder(nn.Module):
    """Counts forwards and remembers whether they ran in inference mode."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 3)
        self.calls, self.inference = 0, []

    def forward(self, x):
        self.calls += 1
        self.inference.append(torch.is_inference_mode_enabled())
        return self.fc(x)


def test_row_fields_and_their_relations():
    row = measure_speed(nn.Linear(2, 3), _make, frames_out_per_clip=27, batch_size=4, threads=1,
                        warmup=1, iters=2, repeats=3)
    assert set(SPEED_FIELDS) | {"threads", "batch_size", "warmup", "iters", "repeats", "device", "precision",
                                "compile", "compile_s"} == set(row)
    assert row["clips_per_s"] > 0 and row["latency_ms"] > 0 and row["speed_cv"] >= 0
    assert row["frames_per_s"] == pytest.approx(row["clips_per_s"] * 27)
    assert row["clips_per_s"] == pytest.approx(4 / (row["latency_ms"] / 1e3))
    assert isinstance(row["peak_mem_mb"], float) and row["peak_mem_mb"] >= 0  # an RSS rise on Linux
    assert (row["threads"], row["batch_size"], row["warmup"], row["iters"], row["repeats"]) == (1, 4, 1, 2, 3)


def test_input_built_once_and_every_forward_in_inference_mode():
    model, built = Recorder(), []
    measure_speed(model, lambda b: built.append(b) or _make(b), frames_out_per_clip=1, batch_size=2,
                  warmup=2, iters=3, repeats=4)
    assert built == [2]
    assert model.calls == 2 + 3 * 4
    assert all(model.inference)


class DtypeRecorder(nn.Module):
    """Remembers the dtype its linear layer computed in."""

    def __init__(self):
        super().__init__()
        self.fc, self.dtypes = nn.Linear(2, 3), []

    def forward(self, x):
        y = self.fc(x)
        self.dtypes.append(y.dtype)
        return y


@pytest.mark.parametrize("precision,dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_precision_autocasts_every_forward(precision, dtype):
    model = DtypeRecorder()
    row = measure_speed(model, _make, frames_out_per_clip=1, warmup=1, iters=1, repeats=2, precision=precision)
    assert row["precision"] == precision and set(model.dtypes) == {dtype}
    assert model.fc.weight.dtype == torch.float32  # autocast, not a cast of the weights


def test_unknown_precision_is_refused_before_timing():
    model = Recorder()
    with pytest.raises(ValueError, match="unknown precision 'int4'; valid: fp32, bf16, fp16"):
        measure_speed(model, _make, frames_out_per_clip=1, precision="int4")
    assert model.calls == 0


def test_single_repeat_has_zero_cv():
    row = measure_speed(nn.Linear(2, 3), _make, frames_out_per_clip=1, warmup=0, iters=1, repeats=1)
    assert row["speed_cv"] == 0.0


@pytest.mark.parametrize("fail", [False, True])
def test_threads_and_modes_restored(fail):
    before = torch.get_num_threads()
    want = 2 if before == 1 else 1
    model = Recorder().train()
    model.fc.eval()
    make = (lambda b: (torch.randn(b, 5),)) if fail else _make  # Linear(2, 3) on 5 features raises
    try:
        row = measure_speed(model, make, frames_out_per_clip=1, threads=want, warmup=0, iters=1, repeats=2)
        assert row["threads"] == want
    except RuntimeError:
        assert fail
    assert torch.get_num_threads() == before
    assert model.training and not model.fc.training


def test_model_error_names_model_and_batch():
    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("kaput")

    with pytest.raises(RuntimeError, match="kaput") as err:
        measure_speed(Boom(), _make, frames_out_per_clip=1, batch_size=3, warmup=1, iters=1, repeats=1)
    assert err.value.__notes__ == ["while measuring the speed of Boom at batch_size=3 on cpu"]


@pytest.mark.parametrize("bad", [dict(repeats=0), dict(iters=0), dict(batch_size=0), dict(warmup=-1),
                                 dict(threads=0)])
def test_bad_settings_rejected_before_running(bad):
    model = Recorder()
    (key, value), = bad.items()
    with pytest.raises(ValueError, match=f"got {key}={value}$"):
        measure_speed(model, _make, frames_out_per_clip=1, **bad)
    assert model.calls == 0


class OOMAbove4(nn.Module):
    def forward(self, x):
        if x.shape[0] > 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return x


def test_sweep_records_out_of_memory_and_goes_on():
    rows = measure_speed_sweep(OOMAbove4(), _make, [2, 8, 3], frames_out_per_clip=27, warmup=0, iters=1, repeats=1)
    assert [(r["batch_size"], r["status"]) for r in rows] == [(2, "ok"), (8, "failed"), (3, "ok")]
    assert rows[1]["error"] == "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (simulated)"
    assert all(rows[1][k] is None for k in SPEED_FIELDS)
    assert rows[2]["frames_per_s"] == pytest.approx(rows[2]["clips_per_s"] * 27)


def test_sweep_cpu_allocator_failure_is_out_of_memory_too():
    class CpuOOM(nn.Module):
        def forward(self, x):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    rows = measure_speed_sweep(CpuOOM(), _make, [1], frames_out_per_clip=1, warmup=0, iters=1, repeats=1)
    assert rows[0]["status"] == "failed" and "can't allocate memory" in rows[0]["error"]


def test_sweep_does_not_swallow_other_errors():
    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        measure_speed_sweep(nn.Linear(5, 3), _make, [1, 2], frames_out_per_clip=1, warmup=0, iters=1, repeats=1)
