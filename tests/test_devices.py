"""`device=auto|cpu|cuda|cuda:N`: checked before compute, part of a cell's identity by kind, stamped in
the record, kept apart in reports and compare; timing that runs out of memory is a recorded skip; parallel
cells claim a GPU each. CPU-only machines run every test here but the CUDA ones, which skip with a reason."""
from __future__ import annotations

import os

import pytest
import torch

from bench import cli, compose, devices
from bench.config import BackboneCfg, Config
from bench.report import write_report
from bench.store import ResultStore
from tests.report_records import record, write_store

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
HERE = "cuda" if CUDA else "cpu"  # what device=auto means on this machine
TINY = ["preset=tiny", "metrics=[params]"]


def run_main(capsys, *args):
    rc = cli.main(["run", *args])
    return rc, capsys.readouterr().err.strip()


def test_auto_is_this_machines_device_and_cpu_keys_did_not_change():
    default, explicit = Config(backbone=BackboneCfg("mixste")), Config(backbone=BackboneCfg("mixste"), device=HERE)
    assert default.cell_identity() == explicit.cell_identity()
    # CPU cells keep the identity they had before devices existed; a GPU cell is a cell of its own
    assert "device" not in Config(backbone=BackboneCfg("mixste"), device="cpu").cell_identity()
    assert devices.device_kind("cuda:3") == "cuda"


def test_explicit_device_cell_equals_the_default_one(tmp_path, capsys):
    assert run_main(capsys, *TINY, f"store={tmp_path}")[0] == 0
    assert run_main(capsys, *TINY, f"device={HERE}", f"store={tmp_path}")[0] == 0
    (rec,) = ResultStore(tmp_path).records()
    assert rec["device"] == HERE and rec["env"]["device"].startswith(HERE)
    assert rec["env"]["cpu_name"]  # the CPU is named whatever the device


def _pretend_gpus(monkeypatch, n):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)


@pytest.mark.parametrize("gpus,device,needle", [
    (0, "cuda", "device=cuda but this machine has no CUDA GPU (devices: cpu); use device=cpu"),
    (0, "cuda:0", "no CUDA GPU"),
    (2, "cuda:7", "device=cuda:7 but this machine has 2 CUDA GPU(s) (cpu, cuda:0, cuda:1); pick one of them"),
    (2, "tpu", "unknown device 'tpu'; valid: auto, cpu, cuda, cuda:N"),
    (0, "gpu", "unknown device 'gpu'"),
])
def test_bad_device_is_one_line_before_compute(tmp_path, capsys, monkeypatch, gpus, device, needle):
    _pretend_gpus(monkeypatch, gpus)
    rc, err = run_main(capsys, *TINY, f"device={device}", f"store={tmp_path / 's'}")
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "s").exists()


def test_more_parallel_cells_than_gpus_is_one_line(tmp_path, capsys, monkeypatch):
    _pretend_gpus(monkeypatch, 2)
    rc, err = run_main(capsys, "-m", *TINY, "experiment=backbones", "device=cuda", "hydra/launcher=joblib",
                       "hydra.launcher.n_jobs=4", f"store={tmp_path / 's'}")
    assert rc == 2 and "hydra.launcher.n_jobs=4 runs 4 cells at once but this machine has 2 GPU(s)" in err, err


@pytest.mark.parametrize("overrides,pinned", [
    ([], f"device={HERE}"),
    (["device=auto"], f"device={HERE}"),
    (["device=cpu"], "device=cpu"),
    (["hydra/launcher=submitit_slurm", "hydra.launcher.gpus_per_node=1"], "device=cuda"),
    (["hydra/launcher=submitit_slurm"], "device=cpu"),  # no GPU asked of SLURM: the job has none
])
def test_auto_is_resolved_once_for_the_grid_and_its_jobs(overrides, pinned):
    out = compose.pin_device(overrides)
    assert [o for o in out if o.startswith("device=")] == [pinned]


def test_parallel_workers_claim_a_gpu_each(tmp_path, monkeypatch):
    monkeypatch.setattr(devices, "gpu_count", lambda: 2)
    monkeypatch.setattr(devices, "_lock_dir", lambda: tmp_path)
    monkeypatch.setattr(devices, "_claimed", None)
    (tmp_path / "gpu0.lock").write_text(str(os.getppid()))      # a live worker holds GPU 0
    assert devices.claim_gpu() == 1 and devices.claim_gpu() == 1  # claimed once per process
    assert (tmp_path / "gpu1.lock").read_text() == str(os.getpid())
    monkeypatch.setattr(devices, "_claimed", None)
    (tmp_path / "gpu1.lock").write_text("999999999")             # a dead worker's lock is taken over
    assert devices.claim_gpu() == 1
    monkeypatch.setattr(devices, "_claimed", None)
    (tmp_path / "gpu1.lock").write_text(str(os.getppid()))
    with pytest.raises(ValueError, match="every one of this machine's 2 GPU"):
        devices.claim_gpu()


def test_out_of_memory_while_timing_is_a_recorded_skip(tmp_path, capsys, monkeypatch):
    from bench.measure import speed

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(speed, "_timed_repeats", oom)
    args = ["preset=tiny", "metrics=[params,speed]", "speed.batch_size=256", f"store={tmp_path}"]
    rc, err = run_main(capsys, *args)
    (rec,) = ResultStore(tmp_path).records()
    assert rc == 0 and rec["status"] == "ok" and rec["params_m"] > 0 and rec["frames_per_s"] is None
    assert rec["speed_skipped"] == f"out of memory at batch 256 on {HERE if HERE == 'cpu' else 'cuda:0'}; lower speed.batch_size"
    assert "1 cell(s) not timed" in err and "failed" not in err.split("not timed")[1]
    monkeypatch.undo()
    rc, err = run_main(capsys, *args)  # a finished grid: the skip counts as done, nothing is re-timed
    assert rc == 0 and "already in the store" in err


def test_speed_compile_times_compilation_apart(tmp_path, capsys, monkeypatch):
    from bench.measure import speed

    monkeypatch.setattr(speed, "_compile", lambda m: torch.compile(m, backend="eager"))  # inductor: minutes on 2 cores
    rc, _ = run_main(capsys, "preset=tiny", "metrics=[speed]", "speed.compile=true", "speed.repeats=2",
                     "speed.iters=1", "speed.warmup=1", f"store={tmp_path}")
    (rec,) = ResultStore(tmp_path).records()
    assert rc == 0 and rec["speed_compile"] is True and rec["speed_compile_s"] > 0 and rec["frames_per_s"] > 0
    assert rec["config"]["speed"]["compile"] is True  # a compiled timing is a cell of its own


def test_reports_and_compare_keep_devices_apart(tmp_path, capsys):
    cpu = [record(), record(pruner="cluster", recoverer="attention", schedule=[(1, 9)])]
    gpu = [dict(r, key=r["key"] + "g", device="cuda", frames_per_s=r["frames_per_s"] * 40) for r in cpu]
    store = write_store(tmp_path / "s", cpu + gpu)
    write_report(str(store.root), str(tmp_path / "rep"))
    md = (tmp_path / "rep" / "efficiency.md").read_text()
    assert "Efficiency (tiny preset, realmocap data)" in md and "Efficiency (tiny preset, realmocap data, on cuda)" in md
    # each device's speed-up is against its own baseline: the same ratio on both
    cpu_part, gpu_part = md.split("on cuda")
    assert cpu_part.count("1.000×") == gpu_part.count("1.000×") == 1
    rc = cli.main(["compare", str(store.root), str(store.root)])
    out = capsys.readouterr().out
    assert rc == 0 and "4 cell(s)" in out
    only_cpu = write_store(tmp_path / "c", cpu)
    rc = cli.main(["compare", str(store.root), str(only_cpu.root)])
    err = capsys.readouterr().err
    assert rc == 1 and "(device=cuda)" in err  # the GPU cells are missing, not matched to CPU ones


@needs_cuda
def test_cuda_cell_stamps_the_gpu(tmp_path, capsys):
    rc, _ = run_main(capsys, "preset=tiny", "metrics=[speed]", "device=cuda", "speed.batch_size=4",
                     f"store={tmp_path}")
    (rec,) = ResultStore(tmp_path).records()
    env = rec["env"]
    assert rc == 0 and rec["device"] == "cuda" and rec["speed_device"].startswith("cuda")
    assert env["device_name"] == torch.cuda.get_device_name() and env["cuda_version"] == torch.version.cuda
    assert {"cudnn_version", "driver_version", "tf32_matmul", "gpu_memory_gb"} <= set(env)
    assert rec["peak_mem_mb"] > 0


@needs_cuda
def test_cuda_and_cpu_cells_differ_only_in_the_device(tmp_path, capsys):
    for device in ("cpu", "cuda"):
        assert run_main(capsys, "preset=tiny", "metrics=[params,flops]", f"device={device}", f"store={tmp_path}")[0] == 0
    a, b = sorted(ResultStore(tmp_path).records(), key=lambda r: r["device"])
    assert (a["device"], b["device"]) == ("cpu", "cuda") and a["key"] != b["key"]
    assert (a["params_m"], a["gflops"]) == (b["params_m"], b["gflops"])
    ca, cb = dict(a["config"]), dict(b["config"])
    assert cb.pop("device") == "cuda" and ca == cb
