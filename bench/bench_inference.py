# SPDX-License-Identifier: GPL-3.0-or-later
"""Inference benchmark: the full-size EMOTE v2 architecture (wav2vec2-base, random weights).

Prints one table, medians of repeated runs, torch on 2 threads by default:

* wav2vec2 forward alone (the floor: nothing can be faster than running wav2vec2 once);
* first generation (empty cache: wav2vec2 + regressor + FLINT decoder + windowing);
* re-generation with another emotion (cached audio features: regressor + decoder only);

for 10 s and 60 s clips, and for a 10-minute clip its time, seconds per audio second and peak
RSS, each long run in a fresh subprocess so the peak belongs to that run alone.

    .venv/bin/python bench/bench_inference.py [--runs 9] [--long-runs 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EMOTIONS = ["Happy", "Sad", "Anger", "Surprise", "Fear", "Disgust", "Contempt", "Neutral"]


def build(threads: int):
    import torch

    from server.animator import Animator
    from server.checkpoints import LoadedModel
    from server.models.emote import EmoteConfig, EmoteModel

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = EmoteModel(EmoteConfig()).eval()
    loaded = LoadedModel(model=model, config=model.config, kind="benchmark", source=None,
                         flint_source="random")
    return Animator(loaded, device="cpu")


def clip(seconds: float):
    from server.audio import clip_from_samples
    from tests.builders import speech_like

    return clip_from_samples(speech_like(seconds, seed=1))


def wav2vec2_floor(animator, audio) -> float:
    import torch

    from server.audio import SAMPLES_PER_FRAME, normalise

    frames = audio.frames
    wave = torch.from_numpy(normalise(audio.samples[: frames * SAMPLES_PER_FRAME]))[None]
    start = time.perf_counter()
    with torch.inference_mode():
        animator.model.audio_model(wave, frames)
    return time.perf_counter() - start


def measure_clip(animator, seconds: float, runs: int) -> dict[str, float]:
    audio = clip(seconds)
    animator.generate(audio, {"emotion": "Neutral"})  # warm-up: allocator, kernels
    floor, first, regen = [], [], []
    for i in range(runs):
        # Interleaved, so drift in machine speed hits all three alike.
        floor.append(wav2vec2_floor(animator, audio))
        animator._cache.clear()
        start = time.perf_counter()
        animator.generate(audio, {"emotion": EMOTIONS[i % 8]})
        first.append(time.perf_counter() - start)
        start = time.perf_counter()
        animator.generate(audio, {"emotion": EMOTIONS[(i + 1) % 8]})
        regen.append(time.perf_counter() - start)
    return {"seconds": seconds, "floor": statistics.median(floor),
            "first": statistics.median(first), "regen": statistics.median(regen)}


def long_child(seconds: float, threads: int) -> None:
    """One long generation in this process; prints JSON with its time and peak RSS."""
    animator = build(threads)
    audio = clip(seconds)
    start = time.perf_counter()
    take = animator.generate(audio, {"emotion": "Happy"})
    elapsed = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": elapsed, "frames": take.frames, "peak_rss_mb": peak_kib / 1024,
                      "windows": len(animator._cache[next(iter(animator._cache))].windows)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9, help="runs per short-clip figure")
    parser.add_argument("--long-runs", type=int, default=5, help="runs of the long clip")
    parser.add_argument("--long-seconds", type=float, default=600.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child-long", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_long:
        long_child(args.long_seconds, args.threads)
        return

    animator = build(args.threads)
    rows = [measure_clip(animator, s, args.runs) for s in (10.0, 60.0)]
    long_runs = []
    for _ in range(args.long_runs):
        out = subprocess.run([sys.executable, __file__, "--child-long", "--threads",
                              str(args.threads), "--long-seconds", str(args.long_seconds)],
                             capture_output=True, text=True, check=True)
        long_runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    long_time = statistics.median(r["seconds"] for r in long_runs)
    peak = max(r["peak_rss_mb"] for r in long_runs)

    print(f"EMOTE v2 architecture (wav2vec2-base, random weights), CPU, {args.threads} threads; "
          f"medians of {args.runs} runs ({args.long_runs} for the long clip)")
    print(f"{'clip':>8} | {'wav2vec2 floor':>14} | {'first gen':>10} | {'first/floor':>11} | "
          f"{'re-gen':>9} | {'re-gen/first':>12} | {'s per audio s':>13}")
    for r in rows:
        print(f"{r['seconds']:>7.0f}s | {r['floor']:>13.3f}s | {r['first']:>9.3f}s | "
              f"{r['first'] / r['floor']:>11.3f} | {r['regen'] * 1000:>7.1f}ms | "
              f"{r['regen'] / r['first']:>11.2%} | {r['first'] / r['seconds']:>13.4f}")
    rate_10 = rows[0]["first"] / rows[0]["seconds"]
    rate_long = long_time / args.long_seconds
    print(f"{args.long_seconds:>7.0f}s | first generation {long_time:.2f}s "
          f"({long_runs[0]['windows']} windows), {rate_long:.4f} s per audio s = "
          f"{rate_long / rate_10:.3f}× the 10 s rate; peak RSS {peak:.0f} MB")
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "inference.json").write_text(json.dumps(
        {"threads": args.threads, "clips": rows, "long": long_runs}, indent=2))


if __name__ == "__main__":
    main()
