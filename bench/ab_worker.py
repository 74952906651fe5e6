"""One revision's side of an A/B run (`bench/ab.py`): a long-lived process that imports *that revision's*
`bench` and `backbones` from its worktree and answers JSON lines on stdin/stdout.

The driver runs this file's source (`python -c SOURCE ROOT`) rather than a module of the revision, so a
revision older than the A/B runner can still be measured as long as it has the few functions used here.
Nothing of the driver's checkout is imported: ROOT goes first on sys.path and the editable-install finder
(which maps `bench` to the checkout it was installed from) is removed before any import.

Requests and answers, one JSON object per line:
  {"op": "setup", "overrides": [...], "multirun": bool, "store": DIR, "target_s": S, "adopt": [...] | null}
      -> {"cells": [{"label", "record" (params / FLOPs / accuracy, via the revision's run_cell), "path",
                      "forward_s", "iters", "choices"}]}: each cell's timing copy is built as its speed metric builds it
                      and warmed up; `iters` forwards make one repeat of about `target_s` seconds
  {"op": "iters", "cell": I, "iters": N} -> {"ok": true}: N forwards per repeat of cell I from now on
  {"op": "reshuffle", "cell": I} -> {"ok": true}: cell I's timing copy and input moved to fresh memory (a new
      segment, see bench/ab.py), then one untimed forward
  {"op": "time", "cell": I} -> {"seconds": S}: one timed repeat of cell I
  {"op": "exit"}
An error is {"error": "one line"}; the driver stops.
"""
import json
import os
import sys
import time


def _isolate(root):
    sys.path.insert(0, root)
    sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
    import bench

    where = os.path.realpath(os.path.dirname(bench.__file__))
    if not where.startswith(os.path.realpath(root) + os.sep):
        raise RuntimeError(f"imported bench from {where}, not from the revision's worktree {root}")


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, list) else x


def _choosing(fastpath, adopt, chosen):
    """Wrap the revision's measured kernel choices (the GEMM path, each attention shape's kernel): record
    them in `chosen`, and where `adopt` (the other side's choices for this cell) covers the same shapes,
    use those instead, so that a near-tie measured differently in two processes does not differ between
    the revisions being compared."""
    gemm, table = fastpath.gemm_path, fastpath.attention_kernel_table

    def gemm_path(calls, *args, **kwargs):
        chosen["gemm"] = own = gemm(calls, *args, **kwargs)
        return adopt.get("gemm", own)

    def attention_kernel_table(calls, *args, **kwargs):
        own = table(calls, *args, **kwargs)
        theirs = {_tuples(k): v for k, v in adopt.get("attention", [])}
        use = theirs if theirs and set(theirs) == set(own) else own
        chosen["attention"] = [[k, v] for k, v in use.items()]
        chosen["adopted"] = use is theirs or "gemm" in adopt
        return use

    fastpath.gemm_path, fastpath.attention_kernel_table = gemm_path, attention_kernel_table
    return lambda: (setattr(fastpath, "gemm_path", gemm), setattr(fastpath, "attention_kernel_table", table))


def _timed_copy(cfg, model, adopt, chosen):
    import torch

    from bench.measure import fastpath
    from bench.measure.fastpath import forward_calls, timing_model

    s = cfg.speed
    clip = torch.randn(1, model.num_frames, model.backbone.num_joints, model.backbone.in_chans,
                       generator=torch.Generator().manual_seed(cfg.seed))
    inputs = (clip.expand(s.batch_size, *clip.shape[1:]).contiguous(),)
    model.eval()
    restore = _choosing(fastpath, adopt, chosen)
    try:
        run, inputs, path = timing_model(model, inputs, s.precision, "cpu", forward_calls(model, inputs),
                                         attention=not s.compile, gemm=not s.compile)
    finally:
        restore()
    if s.compile:
        from bench.measure.speed import _compile

        run, path = _compile(run), path + ", torch.compile (freezing)"
    return run, inputs, path


def _setup(req):
    from bench.cell import cell_label, run_cell
    from bench.compose import compose_cells

    cells, out = compose_cells(req["overrides"], req["multirun"]), []
    try:  # the timing path's allocator setting (process-wide, before the first forward), as measure_speed does
        from bench.measure.allocator import keep_freed_memory
    except ImportError:  # a revision from before it
        keep_freed_memory = lambda: None  # noqa: E731
    keep_freed_memory()
    timed = []
    adopt = req.get("adopt") or [{} for _ in cells]
    for cfg, theirs in zip(cells, adopt):
        if cfg.device not in ("cpu", "auto"):
            raise ValueError(f"the A/B runner times on the CPU; {cell_label(cfg)} asks for device={cfg.device}")
        cfg.device, cfg.store, cfg.rerun = "cpu", req["store"], True
        wanted = list(cfg.metrics)
        cfg.metrics = [m for m in wanted if m != "speed"]
        record = run_cell(cfg) if cfg.metrics else {}
        if record.get("status") == "failed":
            raise ValueError(f"{cell_label(cfg)} failed: {record.get('error')}")
        cell = dict(label=cell_label(cfg), record=_plain(record), speed="speed" in wanted, path="", choices={})
        if cell["speed"]:  # a params/FLOPs/accuracy cell needs no timing copy
            cell.update(_warm(cfg, theirs, timed, req["target_s"]))
        else:
            timed.append(None)
        out.append(cell)
    return out, timed


def _warm(cfg, theirs, timed, target_s):
    """Build and warm up the cell's timing copy; append it to `timed`; what the driver needs of it."""
    import torch

    from bench.cell import build_model

    torch.set_num_threads(cfg.speed.threads)
    model, chosen = build_model(cfg), {}
    run, inputs, path = _timed_copy(cfg, model, theirs, chosen)
    with torch.inference_mode():
        for _ in range(max(1, cfg.speed.warmup)):
            run(*inputs)
        t0 = time.perf_counter()
        run(*inputs)
        forward_s = time.perf_counter() - t0
    iters = max(1, round(target_s / max(forward_s, 1e-6)))  # short repeats: drift cancels within a round
    timed.append((run, inputs, iters, cfg.speed.threads))
    return dict(path=path, forward_s=forward_s, iters=iters, choices=chosen, batch_size=cfg.speed.batch_size,
                frames_out=model.frames_out)


def _reshuffle(timed, index):
    """Cell `index`'s timing copy and its input moved to fresh memory (a deep copy; the old one freed and the
    heap's free pages returned to the system, so the next forwards fault in new pages), then one untimed
    forward."""
    import copy
    import ctypes

    import torch

    old, inputs, iters, threads = timed[index]
    timed[index] = None
    run, fresh = copy.deepcopy(old), tuple(t.clone() if isinstance(t, torch.Tensor) else t for t in inputs)
    del old, inputs  # freed here by reference counting (a gc pass in a process this size takes longer than a round)
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    torch.set_num_threads(threads)
    with torch.inference_mode():
        run(*fresh)
    timed[index] = (run, fresh, iters, threads)


def _plain(record):
    return json.loads(json.dumps(record, default=str))


def _time(entry):
    import torch

    run, inputs, iters, threads = entry
    torch.set_num_threads(threads)
    each = []
    with torch.inference_mode():
        for _ in range(iters):
            t0 = time.perf_counter()
            run(*inputs)
            each.append(time.perf_counter() - t0)
    return each


def main(root):
    # the protocol gets the real stdout; anything the revision prints (logs, C libraries) goes to stderr
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _isolate(root)
    timed = []
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["op"] == "exit":
                break
            if req["op"] == "setup":
                cells, timed = _setup(req)
                answer = {"cells": cells}
            elif req["op"] == "reshuffle":
                _reshuffle(timed, req["cell"])
                answer = {"ok": True}
            elif req["op"] == "iters":  # the driver evens the two sides' forwards per repeat
                run, inputs, _, threads = timed[req["cell"]]
                timed[req["cell"]] = (run, inputs, int(req["iters"]), threads)
                answer = {"ok": True}
            else:
                each = _time(timed[req["cell"]])
                answer = {"seconds": sum(each), "forwards": each}
        except Exception as e:  # noqa: BLE001 - reported to the driver as one line
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            answer = {"error": f"{type(e).__name__}: {first}".rstrip(": ")}
        proto.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
