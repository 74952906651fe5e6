"""Speed measurement: structure and bookkeeping only. No wall-clock thresholds: timings on a shared
2-core machine are not reproducible, so only relations between the reported fields are asserted."""
import os
import re
import shutil

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
                                "compile", "compile_s", "speed_path", "paired_clips_per_s", "paired_ratio_cv"} == set(row)
    assert row["paired_clips_per_s"] is None and row["paired_ratio_cv"] is None  # nothing to pair with
    assert row["clips_per_s"] > 0 and row["latency_ms"] > 0 and row["speed_cv"] >= 0
    assert row["frames_per_s"] == pytest.approx(row["clips_per_s"] * 27)
    assert row["clips_per_s"] == pytest.approx(4 / (row["latency_ms"] / 1e3))
    assert isinstance(row["peak_mem_mb"], float) and row["peak_mem_mb"] >= 0  # bytes allocated on Linux
    assert (row["threads"], row["batch_size"], row["warmup"], row["iters"], row["repeats"]) == (1, 4, 1, 2, 3)


def test_input_built_once_and_every_forward_in_inference_mode():
    model, built = Recorder(), []
    measure_speed(model, lambda b: built.append(b) or _make(b), frames_out_per_clip=1, batch_size=2,
                  warmup=2, iters=3, repeats=4)
    assert built == [2]
    assert model.calls == 1 + 2 + 3 * 4  # one untimed forward captures the Linear calls (path choice, floor)
    assert all(model.inference)


SEEN_DTYPES = []


class DtypeRecorder(nn.Module):
    """Notes the dtype its linear layer computed in (in a module-level list: the timed copy writes there too)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        y = self.fc(x)
        SEEN_DTYPES.append(y.dtype)
        return y


@pytest.mark.parametrize("precision,dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_precision_runs_weights_and_activations_in_it(precision, dtype):
    model = DtypeRecorder()
    SEEN_DTYPES.clear()
    row = measure_speed(model, _make, frames_out_per_clip=1, warmup=1, iters=1, repeats=2, precision=precision,
                        floor=False)
    assert row["precision"] == precision and SEEN_DTYPES[1:] == [dtype] * 3  # after the capture forward
    assert model.fc.weight.dtype == torch.float32  # the timed model is a copy; the model is left as it was


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


# --- the timing path: kernel choices on a copy, the GEMM floor, deployment precision -------------------

def _ops_run(fn):
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages()}


@pytest.mark.parametrize("precision, dtype, tol", [("fp32", torch.float32, 1e-5), ("bf16", torch.bfloat16, 5e-2)])
def test_onednn_linears_live_only_in_the_timing_copy(monkeypatch, precision, dtype, tol):
    """Where oneDNN has a linear for the dtype (probed; an AVX2-only CPU has none in bf16), the copy runs
    it; the fallback where it has none is tested on every CPU in test_capability.py."""
    from backbones import create
    from bench.measure import capability, fastpath

    if not capability.onednn_linear_works(dtype):
        pytest.skip(f"oneDNN has no {precision} linear on this CPU ({capability.cpu_isa()}); probed")
    monkeypatch.setattr(fastpath, "gemm_path", lambda calls, dtype=torch.float32: "onednn")  # as where it wins
    model = create("mixste", preset="tiny").eval()
    x = torch.randn(2, 27, 17, 2)
    run, inputs, path = fastpath.timing_model(model, (x,), precision, "cpu")
    label = capability.precision_support(precision).label()
    assert path.startswith(f"{label}, oneDNN linear, attention sdpa ") and run is not model
    assert all(type(m) is not fastpath.OneDNNLinear for m in model.modules())  # the model stays plain
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    with torch.inference_mode():
        assert "mkldnn::_linear_pointwise" in _ops_run(lambda: run(*inputs))
        ref = model(x)
        assert ((run(*inputs).float() - ref).norm() / ref.norm()).item() < tol


def test_gemm_path_is_measured_not_assumed(monkeypatch):
    from bench.measure import fastpath

    calls = [("linear", torch.Size([256, 64]), torch.Size([128, 64]), True, {})]
    monkeypatch.setattr(fastpath, "onednn_linear_works", lambda dtype: True)  # as on a CPU where it exists
    times = iter([2.0, 1.0])  # aten, then oneDNN: oneDNN twice as fast here
    monkeypatch.setattr(fastpath, "_best_of", lambda fn, repeats=5: next(times))
    assert fastpath.gemm_path(calls) == "onednn"
    times = iter([1.0, 0.99])  # within the margin: keep torch's default
    assert fastpath.gemm_path(calls) == "aten"
    monkeypatch.setattr(fastpath, "onednn_linear_works", lambda dtype: dtype == torch.float32)
    times = iter([2.0, 1.0])
    assert fastpath.gemm_path(calls, torch.bfloat16) == "aten"  # no oneDNN bf16 linear: nothing timed
    assert next(times) == 2.0


def test_attention_kernel_is_measured_per_shape_not_assumed(monkeypatch):
    """Each distinct attention shape of the forward is timed on both kernels; the timing copy runs each on
    the faster one (same outputs); the label says how many shapes took SDPA."""
    from backbones import create, layers
    from bench.measure import fastpath

    model = create("mixste", preset="tiny").eval()  # spatial (17 keys) and temporal (27 keys) attention
    x = torch.randn(2, 27, 17, 2)
    calls = fastpath.forward_calls(model, (x,))
    shapes = {(tuple(c[1]), tuple(c[2])) for c in calls if c[0] == "attention"}
    assert {k[-2] for _, k in shapes} == {17, 27} and sum(c[0] == "attention" for c in calls) == 2 * 4  # depth 4

    def fake_best_of(fn, repeats=5):  # SDPA faster for 17 keys only, whatever this CPU would say
        seen = []
        real = layers.F.scaled_dot_product_attention
        monkeypatch.setattr(layers.F, "scaled_dot_product_attention", lambda *a: seen.append(a[1].shape[-2]) or real(*a))
        fn()
        monkeypatch.setattr(layers.F, "scaled_dot_product_attention", real)
        keys = seen[0] if seen else None
        return 1.0 if keys == 17 else 2.0 if keys else 1.5

    monkeypatch.setattr(fastpath, "_best_of", fake_best_of)
    table = fastpath.attention_kernel_table(calls)
    assert sorted(table.values()) == ["explicit", "sdpa"]
    assert {k[1][-2]: v for k, v in table.items()} == {17: "sdpa", 27: "explicit"}
    run, inputs, label = fastpath.timing_model(model, (x,), "fp32", "cpu", calls)
    assert label.endswith(", attention sdpa 1/2 shapes") and isinstance(run, fastpath.AttentionKernels)
    used = []
    real = layers.F.scaled_dot_product_attention
    monkeypatch.setattr(layers.F, "scaled_dot_product_attention", lambda *a: used.append(a[1].shape[-2]) or real(*a))
    with torch.inference_mode():
        torch.testing.assert_close(run(*inputs), model(x), atol=1e-5, rtol=1e-5)
    assert used and set(used) == {17}  # 27 keys stayed explicit; 17 keys would be explicit by the default rule
    assert fastpath.timing_model(model, (x,), "fp32", "cpu", calls, attention=False)[2].endswith("linear")
    times = iter([1.05, 1.0, 1.0] * 3 * 2)  # both explicit kernels 5 % faster: within the margin, SDPA every time
    monkeypatch.setattr(fastpath, "_best_of", lambda fn, repeats=5: next(times))
    assert set(fastpath.attention_kernel_table(calls).values()) == {"sdpa"}


@pytest.mark.parametrize("times, chosen", [
    ({"sdpa": 3.0, "explicit": 2.0, "decomposed": 1.0}, "decomposed"),
    ({"sdpa": 2.0, "explicit": 2.0, "decomposed": 1.0}, "decomposed"),
    ({"sdpa": 3.0, "explicit": 2.0, "decomposed": 1.9}, "explicit"),    # within the margin: the earlier kernel
    ({"sdpa": 1.05, "explicit": 1.0, "decomposed": 1.0}, "sdpa"),
    ({"sdpa": 1.0, "explicit": 2.0, "decomposed": 3.0}, "sdpa"),
])
def test_attention_kernel_choice_takes_the_decomposed_softmax_where_it_wins(monkeypatch, times, chosen):
    """Three kernels per shape: SDPA, the explicit product with torch's softmax, and with the softmax
    decomposed (for rows shorter than a SIMD vector); each must beat the one before it by the margin.
    The timing copy runs the chosen one, with the same outputs, and its label says how many shapes
    decompose the softmax."""
    from backbones import layers
    from backbones.hourglass.model import create_hourglass
    from bench.measure import fastpath

    model = create_hourglass("mixste", "tiny", pruner="uniform", recoverer="interpolation", schedule=[[1, 9]]).eval()
    x = torch.randn(2, 27, 17, 2)
    calls = fastpath.forward_calls(model, (x,))
    # the kernel being timed is the one the active chooser names
    monkeypatch.setattr(fastpath, "_best_of", lambda fn, repeats=5: times[layers._CHOOSER.get()(None, None, None)])
    table = fastpath.attention_kernel_table(calls)
    assert len(table) == 4 and set(table.values()) == {chosen}  # 17 and 27, then 17 and 9 keys
    run, inputs, label = fastpath.timing_model(model, (x,), "fp32", "cpu", calls, gemm=False)
    assert label.endswith(f"attention sdpa {4 * (chosen == 'sdpa')}/4 shapes"
                          + (" (softmax decomposed in 4)" if chosen == "decomposed" else ""))
    used = []
    real = layers.softmax_decomposed
    monkeypatch.setattr(layers, "softmax_decomposed", lambda s: used.append(s.shape[-1]) or real(s))
    with torch.inference_mode():
        torch.testing.assert_close(run(*inputs), model(x), atol=1e-5, rtol=1e-5)
    assert sorted(set(used)) == ([9, 17, 27] if chosen == "decomposed" else [])


def _native_bf16() -> bool:
    """bf16 arithmetic on this CPU, from torch's ISA queries directly (what capability.py must agree with)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def test_bf16_times_a_bf16_copy_and_outputs_move_by_its_rounding():
    from backbones import create
    from bench.measure import fastpath

    model = create("mixste", preset="tiny").eval()
    x = torch.randn(2, 27, 17, 2)
    run, (xb,), label = fastpath.timing_model(model, (x,), "bf16", "cpu")
    emulated = r", emulated \(this CPU \(\w+\) has no bf16 arithmetic: [^)]*\)" if not _native_bf16() else ""
    assert re.match(rf"bf16 weights and activations{emulated}, (aten|oneDNN) linear, attention", label), label
    assert xb.dtype == torch.bfloat16
    assert {p.dtype for p in run.parameters()} == {torch.bfloat16} and {p.dtype for p in model.parameters()} == {torch.float32}
    with torch.inference_mode():
        ref, out = model(x), run(xb).float()
    assert out.dtype == torch.float32 and ((out - ref).norm() / ref.norm()).item() < 5e-2


def test_floor_counts_every_linear_call_and_efficiency_is_its_share(monkeypatch):
    from bench.measure import fastpath, floor
    from bench.measure.floor import gemm_floor_s

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(64, 64), nn.Linear(64, 8)

        def forward(self, x):
            return self.b(torch.relu(self.a(self.a(x))))  # `a` runs twice

    m = Two().eval()
    calls = fastpath.forward_calls(m, (torch.randn(32, 64),))
    assert [(c[1], c[2]) for c in calls] == [((32, 64), (64, 64))] * 2 + [((32, 64), (8, 64))]
    assert gemm_floor_s(calls, torch.float32) > 0
    monkeypatch.setattr(floor, "_median_s", lambda fn, repeats, sync: 1.0)  # count, not time: each call 1 s
    assert gemm_floor_s(calls, torch.float32) == 3.0 and gemm_floor_s(calls[:1], torch.float32) == 1.0
    monkeypatch.undo()
    row = measure_speed(m, lambda b: (torch.randn(b, 64),), frames_out_per_clip=1, batch_size=32, threads=1,
                        warmup=1, iters=2, repeats=3, batch1_latency=True)
    assert row["floor_s"] > 0 and row["hw_efficiency"] == pytest.approx(row["floor_s"] / (row["latency_ms"] / 1e3))
    assert row["latency_b1_ms"] > 0 and row["speed_path"].startswith("fp32")


def test_a_paired_model_is_timed_alternately_in_the_same_run():
    """`paired=`: the baseline is timed repeat by repeat between the model's own repeats, so drift of the
    machine's speed hits both and their ratio is a within-run ratio."""
    order = []

    class Tagged(nn.Module):
        def __init__(self, tag):
            super().__init__()
            self.tag, self.fc = tag, nn.Linear(2, 3)

        def forward(self, x):
            order.append(self.tag)
            return self.fc(x)

    row = measure_speed(Tagged("a"), _make, frames_out_per_clip=27, batch_size=4, threads=1, warmup=1, iters=2,
                        repeats=3, floor=False, paired=Tagged("b"))
    timed = [t for t in order if t in "ab"][-12:]  # after the warm-ups: 3 repeats x 2 iters each, alternating
    assert timed == ["a", "a", "b", "b"] * 3
    assert row["paired_clips_per_s"] > 0 and row["clips_per_s"] > 0 and row["paired_ratio_cv"] >= 0


def test_a_pruned_cells_speed_up_is_timed_against_its_baseline_in_its_own_run(tmp_path):
    import json

    import pandas as pd

    from bench import cli

    store = tmp_path / "store"
    fast = ["preset=tiny", "metrics=[speed]", "speed.warmup=1", "speed.iters=1", "speed.repeats=3", f"store={store}"]
    assert cli.main(["run", "-m", "pruner=none,cluster", "recoverer=interpolation", "schedule=[[1,9]]", *fast]) == 0
    recs = {r["pruner"]: r for r in (json.loads(p.read_text()) for p in store.glob("*.json"))}
    assert recs["cluster"]["speedup_paired"] > 0 and recs["none"].get("speedup_paired") is None
    assert cli.main(["report", "--store", str(store), "--out", str(tmp_path / "rep")]) == 0
    csv = pd.read_csv(tmp_path / "rep" / "results.csv")
    assert csv.loc[csv["pruner"] == "cluster", "speedup_paired"].iloc[0] == pytest.approx(recs["cluster"]["speedup_paired"])
    eff = (tmp_path / "rep" / "efficiency.md").read_text()
    row = next(line for line in eff.splitlines() if "cluster + interpolation" in line)
    assert f"{recs['cluster']['speedup_paired']:.3f}×" in row  # the table shows the within-run ratio


def test_timing_keeps_freed_memory_so_large_activations_are_not_faulted_in_again():
    """On glibc the timing path stops malloc from mmapping (and unmapping) large blocks: a freed 64 MiB
    activation is then reused from the heap by the next forward instead of being faulted in page by page.
    The speed record names the setting."""
    from bench.measure import allocator

    if allocator.heap_in_use_bytes() is None or os.environ.get(allocator.ENV, "").lower() == "system":
        pytest.skip("not glibc >= 2.33 (no mallopt / mallinfo2), or opted out")
    row = measure_speed(nn.Linear(2, 3), _make, frames_out_per_clip=27, batch_size=2, warmup=1, iters=1, repeats=1)
    assert row["speed_path"].endswith(", " + allocator.LABEL)
    mapped = allocator._state["mallinfo2"]().hblkhd
    block = torch.empty(16 << 20)  # 64 MiB: by glibc's defaults a fresh mmap
    assert allocator._state["mallinfo2"]().hblkhd == mapped  # served by the heap instead
    del block


def test_allocator_setting_can_be_left_alone(monkeypatch):
    from bench.measure import allocator

    monkeypatch.setattr(allocator, "_state", {})
    monkeypatch.setenv(allocator.ENV, "system")
    monkeypatch.setattr(allocator, "_glibc", lambda: pytest.fail("mallopt must not be called when opted out"))
    assert allocator.keep_freed_memory() is None


def test_a_misspelt_allocator_setting_is_refused(monkeypatch):
    from bench.measure import allocator

    monkeypatch.setattr(allocator, "_state", {})
    monkeypatch.setenv(allocator.ENV, "sytem")
    with pytest.raises(ValueError, match="VPTBENCH_MALLOC='sytem' is not a setting; use VPTBENCH_MALLOC=system"):
        measure_speed(nn.Linear(2, 3), _make, frames_out_per_clip=27, batch_size=2, iters=1, repeats=1)


class HoldsActivation(nn.Module):
    """Allocates a 64 MiB temporary and keeps it alive across some work, as a large activation would."""

    def forward(self, x):
        big = torch.ones(16 << 20)
        for _ in range(20):
            big.mul_(1.0001)
        return x + big[:1]


def test_peak_memory_is_what_a_forward_allocates_even_when_freed_memory_is_kept():
    from bench.measure import allocator

    if allocator.heap_in_use_bytes() is None:
        pytest.skip("glibc's mallinfo2 is not available here: peak memory falls back to the resident set size")
    allocator.keep_freed_memory()
    row = measure_speed(HoldsActivation(), _make, frames_out_per_clip=27, batch_size=2, threads=1, warmup=2,
                        iters=1, repeats=2, floor=False)
    # the 64 MiB block was allocated in earlier forwards already: resident memory would not rise any more
    assert 48 <= row["peak_mem_mb"] < 200


@pytest.mark.parametrize("name", ["mixste", "motionbert", "motionagformer", "mhformer", "poseformer"])
def test_torch_compile_sees_each_model_as_one_graph(name):
    """`speed.compile=true` times torch.compile(model): a graph break (e.g. a Python object dynamo cannot
    trace in the attention) splits the model into per-block graphs that recompile for every block until
    dynamo's limit, and the timed model runs mostly eager."""
    from backbones import create

    model = create(name, preset="tiny").eval()
    x = torch.randn(1, model.num_frames, 17, model.in_chans)
    torch._dynamo.reset()
    with torch.inference_mode():
        explained = torch._dynamo.explain(model)(x)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons[:1]


def test_timing_compiles_with_freezing(monkeypatch):
    """The timed copy never trains: speed.compile=true compiles it with inductor's freezing on (weights as
    constants), and the record says so."""
    import torch._inductor.config as inductor
    from bench.measure import speed

    seen = []

    class Compiled(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            seen.append(inductor.freezing)
            return self.model(x)

    monkeypatch.setattr(torch, "compile", lambda model, **kw: Compiled(model))  # inductor: minutes on 2 cores
    row = measure_speed(nn.Linear(2, 3), _make, frames_out_per_clip=27, batch_size=2, iters=1, repeats=2,
                        compile=True)
    assert row["speed_path"].startswith("fp32") and ", torch.compile (freezing)" in row["speed_path"]
    assert seen and all(seen) and inductor.freezing is False  # on for every forward, restored after


def test_inductor_with_freezing_compiles_the_timing_copy_where_onednn_would_win(monkeypatch):
    """Under compile the copy keeps plain nn.Linear even where oneDNN's linear wins eager: inductor's
    freezing packs oneDNN weights itself and failed (an assertion in its mkldnn fusion pass) on a graph that
    already called oneDNN's linear. A real inductor compile of the tiny preset (about 20 s on 2 cores)."""
    from backbones import create
    from bench.measure import fastpath

    if not fastpath.onednn_linear_works(torch.float32):
        pytest.skip("this torch build has no oneDNN linear")
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("inductor needs a C++ compiler (g++ or $CXX) and there is none on PATH")
    monkeypatch.setattr(fastpath, "gemm_path", lambda calls, dtype=torch.float32: "onednn")
    torch._dynamo.reset()
    row = measure_speed(create("mixste", preset="tiny"), _make, frames_out_per_clip=27, batch_size=2, iters=1,
                        repeats=1, warmup=1, compile=True, floor=False)
    assert row["compile_s"] > 0 and "linear" not in row["speed_path"] and row["frames_per_s"] > 0


@pytest.mark.parametrize("pruner, recoverer", [("cluster", "interpolation"), ("attention", "attention"),
                                               ("random", "nearest")])
def test_torch_compile_sees_a_pruned_model_as_one_graph(pruner, recoverer):
    """Compiled, the seeded tie-break noise comes from a hash instead of a torch.Generator (which dynamo
    cannot trace); eager keeps the generator."""
    from backbones import create_hourglass

    model = create_hourglass("mixste", "tiny", pruner, recoverer, [[1, 9]]).eval()
    x = torch.randn(1, 27, 17, 2)
    torch._dynamo.reset()
    with torch.inference_mode():
        explained = torch._dynamo.explain(model)(x)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons[:1]


def test_hashed_noise_is_seeded_uniform_and_differs_by_stream():
    from backbones.hourglass.pruning import hashed_uniform

    a = hashed_uniform((4, 5000), seed=0, stream=0, device="cpu")
    assert a.shape == (4, 5000) and a.dtype == torch.float32 and 0 <= a.min() and a.max() < 1
    assert torch.equal(a, hashed_uniform((4, 5000), seed=0, stream=0, device="cpu"))  # deterministic
    assert not torch.equal(a, hashed_uniform((4, 5000), seed=1, stream=0, device="cpu"))
    assert not torch.equal(a, hashed_uniform((4, 5000), seed=0, stream=1, device="cpu"))
    counts = torch.histc(a, bins=10, min=0, max=1)  # 2,000 expected per bin
    assert ((counts - 2000).abs() < 200).all(), counts


def test_a_compiled_pruned_model_is_the_eager_one_with_hashed_tie_break_noise(monkeypatch):
    """What compiling changes in a pruned model is the source of its 1e-6 tie-break noise, nothing else:
    with the hash in eager too, the outputs agree (dynamo's graphs run eagerly here: inductor takes
    minutes on 2 cores)."""
    from backbones import create_hourglass

    model = create_hourglass("mixste", "tiny", "cluster", "interpolation", [[1, 9]]).eval()
    x = torch.randn(2, 27, 17, 2)
    torch._dynamo.reset()
    with torch.inference_mode():
        compiled = torch.compile(model, backend="eager")(x)
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # eager, hashed noise
        torch.testing.assert_close(compiled, model(x))
