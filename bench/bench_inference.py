# SPDX-License-Identifier: GPL-3.0-or-later
"""Inference benchmark: ONNX Runtime and torch side by side, in one run, on the same weights.

The full-size EMOTE v2 architecture (wav2vec2-base, seeded random weights), CPU, 2 threads by
default. Medians of repeated runs, the backends' runs interleaved so drift in machine speed
hits both alike, and each backend in processes of its own (in one process, torch ran 17-20 %
slower after ONNX Runtime's runs, which flattered the ratio):

* first generation (empty cache: wav2vec2 + regressor + FLINT decoder + windowing) and
  re-generation with another emotion (cached audio features) for 10 s and 60 s clips, in
  :data:`CLIP_ROUNDS` alternating subprocesses per backend;
* a 10-minute clip: time, seconds per audio second and peak RSS, each run in a fresh
  subprocess so the peak belongs to that run alone (the ONNX child never imports torch);
* the worker's cold start: ``python -m server worker`` started, ``ready``, the built-in demo
  model loaded (``loaded``), in a fresh process each run.

    .venv/bin/python bench/bench_inference.py [--runs 9] [--long-runs 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EMOTIONS = ["Happy", "Sad", "Anger", "Surprise", "Fear", "Disgust", "Contempt", "Neutral"]
BACKENDS = ("onnx", "torch")
CLIP_ROUNDS = 3  # subprocesses per backend for the 10 s and 60 s figures, alternating
CLIP_SECONDS = (10.0, 60.0)


def random_source(seed: int = 0):
    """The official architecture with seeded random weights, made with NumPy (no torch)."""
    import numpy as np

    from server.checkpoints import ModelSource
    from server.config import EmoteConfig, emote_weights

    config = EmoteConfig()
    rng = np.random.default_rng(seed)
    state = {}
    for name, shape in emote_weights(config).items():
        if name.endswith("num_batches_tracked"):
            state[name] = np.zeros(shape, np.int64)
        elif name.endswith(("running_var", "norm.weight", "norm1.weight", "norm2.weight",
                            "layer_norm.weight", "original0")) or ".2.weight" in name:
            state[name] = np.ones(shape, np.float32)
        elif name.endswith(("bias", "running_mean")):
            state[name] = np.zeros(shape, np.float32)
        else:
            state[name] = rng.normal(0, 0.02, shape).astype(np.float32)
    return ModelSource(config=config, state=state, kind="benchmark", source=ROOT,
                       flint_source="random")


def build(backend: str, threads: int):
    from server.animator import Animator

    return Animator(random_source(), backend=backend, device="cpu", threads=threads)


def clip(seconds: float):
    """The demo's sentence (real speech), repeated to ``seconds``."""
    import numpy as np

    from server.audio import SAMPLE_RATE, clip_from_samples, load_audio
    from server.demo.recipe import SENTENCE_WAV

    sentence = load_audio(SENTENCE_WAV).samples
    repeats = int(np.ceil(seconds * SAMPLE_RATE / len(sentence)))
    return clip_from_samples(np.tile(sentence, repeats)[: int(seconds * SAMPLE_RATE)])


def clips_child(backend: str, runs: int, threads: int) -> None:
    """``runs`` first generations and re-generations of each clip length in this process,
    after a warm-up (allocators, kernels); prints JSON with the times."""
    animator = build(backend, threads)
    times: dict[str, dict[str, list[float]]] = {}
    for seconds in CLIP_SECONDS:
        audio = clip(seconds)
        animator.generate(audio, {"emotion": "Neutral"})
        first, regen = [], []
        for i in range(runs):
            animator._cache.clear()
            start = time.perf_counter()
            animator.generate(audio, {"emotion": EMOTIONS[i % 8]})
            first.append(time.perf_counter() - start)
            start = time.perf_counter()
            animator.generate(audio, {"emotion": EMOTIONS[(i + 1) % 8]})
            regen.append(time.perf_counter() - start)
        times[str(seconds)] = {"first": first, "regen": regen}
    print(json.dumps(times))


def measure_clips(runs: int, threads: int) -> dict[float, dict[str, dict[str, float]]]:
    """Medians of ``runs`` runs per figure, spread over :data:`CLIP_ROUNDS` subprocesses per
    backend, the backends alternating."""
    per_child = -(-runs // CLIP_ROUNDS)
    times = {s: {b: {"first": [], "regen": []} for b in BACKENDS} for s in CLIP_SECONDS}
    for _ in range(CLIP_ROUNDS):
        for backend in BACKENDS:
            out = child("--child-clips", backend, threads, "--runs", str(per_child))
            for seconds in CLIP_SECONDS:
                for kind, values in out[str(seconds)].items():
                    times[seconds][backend][kind].extend(values)
    return {s: {b: {k: statistics.median(v) for k, v in t.items()} for b, t in row.items()}
            for s, row in times.items()}


def child(flag: str, backend: str, threads: int, *more: str) -> dict:
    """Run this script as a subprocess measuring ``backend``; its last line of JSON."""
    out = subprocess.run([sys.executable, __file__, flag, backend, "--threads", str(threads),
                          *more], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def long_child(backend: str, seconds: float, threads: int) -> None:
    """One long generation in this process; prints JSON with its time and peak RSS."""
    animator = build(backend, threads)
    audio = clip(seconds)
    start = time.perf_counter()
    take = animator.generate(audio, {"emotion": "Happy"})
    elapsed = time.perf_counter() - start
    print(json.dumps({"seconds": elapsed, "frames": take.frames, "peak_rss_mb": peak_rss_mb(),
                      "torch_imported": "torch" in sys.modules,
                      "windows": len(animator._cache[next(iter(animator._cache))].windows)}))


def peak_rss_mb() -> float:
    """This process's peak resident memory. Linux's ``ru_maxrss`` carries the parent's peak
    over ``exec``; ``VmHWM`` belongs to this process image alone."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes there, KiB here


def cold_start(backend: str, threads: int) -> float:
    """Seconds from starting ``python -m server worker`` to the demo model's ``loaded``."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    start = time.perf_counter()
    worker = subprocess.Popen([sys.executable, "-m", "server", "worker"], cwd=ROOT, env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert worker.stdin is not None and worker.stdout is not None
    worker.stdin.write(json.dumps({"type": "load", "id": "1", "model": None, "device": "cpu",
                                   "backend": backend, "threads": threads}) + "\n")
    worker.stdin.flush()
    for line in worker.stdout:
        reply = json.loads(line)
        if reply.get("type") == "loaded":
            break
        if reply.get("type") == "error":
            raise RuntimeError(reply["message"])
    elapsed = time.perf_counter() - start
    worker.stdin.close()
    worker.wait(timeout=30)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9, help="runs per short-clip figure")
    parser.add_argument("--long-runs", type=int, default=5, help="runs of the long clip")
    parser.add_argument("--long-seconds", type=float, default=600.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child-long", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--child-clips", choices=BACKENDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_long:
        long_child(args.child_long, args.long_seconds, args.threads)
        return
    if args.child_clips:
        clips_child(args.child_clips, args.runs, args.threads)
        return

    rows = measure_clips(args.runs, args.threads)
    long_runs: dict[str, list[dict]] = {b: [] for b in BACKENDS}
    for _ in range(args.long_runs):
        for backend in BACKENDS:
            long_runs[backend].append(child("--child-long", backend, args.threads,
                                            "--long-seconds", str(args.long_seconds)))
    starts: dict[str, list[float]] = {b: [] for b in BACKENDS}
    for _ in range(args.runs):
        for backend in BACKENDS:
            starts[backend].append(cold_start(backend, args.threads))

    print(f"EMOTE v2 architecture (wav2vec2-base, random weights), CPU, {args.threads} threads; "
          f"medians of {args.runs} runs ({args.long_runs} for the long clip)")
    print(f"{'':>22} | {'ONNX Runtime':>12} | {'torch':>10} | {'ONNX / torch':>12}")

    def line(label: str, onnx: float, torch: float, unit: str = "s") -> None:
        scale = 1000.0 if unit == "ms" else 1.0
        print(f"{label:>22} | {onnx * scale:>10.3f}{unit:<2} | {torch * scale:>8.3f}{unit:<2} | "
              f"{onnx / torch:>11.3f}×")

    for seconds, row in rows.items():
        line(f"{seconds:.0f} s first generation", row["onnx"]["first"], row["torch"]["first"])
        line(f"{seconds:.0f} s re-generation", row["onnx"]["regen"], row["torch"]["regen"], "ms")
    long = {b: statistics.median(r["seconds"] for r in runs) for b, runs in long_runs.items()}
    peak = {b: max(r["peak_rss_mb"] for r in runs) for b, runs in long_runs.items()}
    label = f"{args.long_seconds / 60:.0f} min first generation"
    line(label, long["onnx"], long["torch"])
    print(f"{'(seconds per audio s)':>22} | {long['onnx'] / args.long_seconds:>12.4f} | "
          f"{long['torch'] / args.long_seconds:>10.4f} |")
    print(f"{'peak RSS (MB)':>22} | {peak['onnx']:>12.0f} | {peak['torch']:>10.0f} | "
          f"{peak['onnx'] / peak['torch']:>11.3f}×")
    cold = {b: statistics.median(v) for b, v in starts.items()}
    line("worker cold start", cold["onnx"], cold["torch"])
    imported = any(r["torch_imported"] for r in long_runs["onnx"])
    print(f"(the ONNX long runs imported torch: {imported}; "
          f"{long_runs['onnx'][0]['windows']} windows of audio in the long clip)")
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "inference.json").write_text(json.dumps(
        {"threads": args.threads, "clips": rows, "long": long_runs, "cold_start": starts},
        indent=2))


if __name__ == "__main__":
    main()
