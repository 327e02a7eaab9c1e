# SPDX-License-Identifier: GPL-3.0-or-later
"""Retarget benchmark: setting a character up, and applying a minute of motion to it.

The ARKit test head of :mod:`tests.characters` (character (a): 52 ARKit keys, a jaw bone, its
own topology) against the demo head's FLAME, NumPy only, medians of repeated runs:

* set-up: :func:`server.retarget.setup_character` (FLAME fit, key measurement, quality probe);
* apply: :func:`server.retarget.retarget` of a 60 s take at 30 fps (1800 frames): the built-in
  demo model's take of the demo sentence repeated to 60 s, lips shut at p/b/m, resampled from
  25 to 30 fps, with its closure track;
* the mapping's JSON: size, write and read.

    .venv/bin/python bench/bench_retarget.py [--runs 9] [--setup-runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def minute_take(seconds: float = 60.0, fps: float = 30.0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The demo model on the demo sentence repeated to ``seconds``, lips shut at p/b/m,
    resampled to ``fps``: expression (T, E), jaw (T, 3), closure (T,)."""
    from server.animator import Animator
    from server.audio import SAMPLE_RATE, clip_from_samples, load_audio
    from server.checkpoints import read_model
    from server.demo.head import build_demo_head
    from server.demo.recipe import SENTENCE_WAV
    from server.living.closure import close_lips, closure_weights, lip_closure

    sentence = load_audio(SENTENCE_WAV).samples
    repeats = int(np.ceil(seconds * SAMPLE_RATE / len(sentence)))
    clip = clip_from_samples(np.tile(sentence, repeats)[: int(seconds * SAMPLE_RATE)])
    take = Animator(read_model(None), backend="onnx", threads=2).generate(
        clip, {"emotion": "Happy"})
    closure = closure_weights(clip.samples, take.frames)
    expression, jaw = close_lips(take.expression, take.jaw, closure,
                                 lip_closure(build_demo_head().flame))
    source = np.arange(take.frames) / take.fps
    target = np.arange(int(seconds * fps)) / fps

    def resample(values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, np.float64).reshape(take.frames, -1)
        return np.stack([np.interp(target, source, column) for column in values.T], axis=1)

    return resample(expression), resample(jaw), resample(closure)[:, 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9, help="runs of the apply figure")
    parser.add_argument("--setup-runs", type=int, default=5, help="runs of the set-up figure")
    args = parser.parse_args()

    from server.demo.head import build_demo_head
    from server.retarget import CharacterMapping, retarget, setup_character
    from tests.characters import arkit_character

    flame = build_demo_head().flame
    character = arkit_character().geometry
    expression, jaw, closure = minute_take()
    setups, applies, writes, reads = [], [], [], []
    for _ in range(args.setup_runs):
        started = time.perf_counter()
        mapping = setup_character(character, flame)
        setups.append(time.perf_counter() - started)
    for _ in range(args.runs):
        started = time.perf_counter()
        result = retarget(mapping, flame, expression, jaw, fps_scale=30 / 25, closure=closure)
        applies.append(time.perf_counter() - started)
        started = time.perf_counter()
        text = mapping.to_json()
        writes.append(time.perf_counter() - started)
        started = time.perf_counter()
        CharacterMapping.from_json(text)
        reads.append(time.perf_counter() - started)
    setup, apply = statistics.median(setups), statistics.median(applies)
    print(f"Retarget onto '{character.name}' ({character.n_vertices} vertices, "
          f"{character.n_keys} keys, jaw bone) from the demo head's FLAME; medians of "
          f"{args.setup_runs} set-ups and {args.runs} applies")
    print(f"{'set-up':>28} | {setup:8.3f} s  (target ≤ 5 s)")
    print(f"{'apply 60 s at 30 fps':>28} | {apply:8.3f} s  ({len(expression)} frames; "
          "target ≤ 0.5 s)")
    print(f"{'mapping JSON':>28} | {len(text) / 1e6:8.2f} MB, written in "
          f"{statistics.median(writes):.3f} s, read in {statistics.median(reads):.3f} s")
    print(f"{'set-up quality':>28} | " + ", ".join(
        f"{k} {v:.0%}" for k, v in mapping.quality.items()))
    print(f"{'this take':>28} | " + ", ".join(f"{k} {v:.0%}" for k, v in result.report.items()))
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "retarget.json").write_text(json.dumps({
        "character": character.name, "vertices": character.n_vertices, "keys": character.n_keys,
        "frames": len(expression), "setup_seconds": setups, "apply_seconds": applies,
        "setup_median": setup, "apply_median": apply, "json_chars": len(text),
        "json_write_seconds": writes, "json_read_seconds": reads,
        "quality": mapping.quality, "take_report": result.report}, indent=2))


if __name__ == "__main__":
    main()
