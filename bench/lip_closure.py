# SPDX-License-Identifier: GPL-3.0-or-later
"""Lip closure on held-out speech: the built-in demo model before and after the closure layer.

The held-out set is the demo recipe's test split: :data:`server.demo.corpus.HELD_OUT_SENTENCES`
spoken by the held-out voice (festival HTS ``slt``, :func:`server.demo.recipe.split_voices`),
built exactly as the recipe builds it (:func:`server.demo.corpus.plan` with the test voices,
unaugmented; emotion ``j % 8`` at medium intensity, style 0). Each sequence runs through the
built-in demo model (ONNX backend) and is posed on the demo head with the NumPy FLAME forward
pass. What is measured:

- **inner-lip gap**: per frame, the mean distance between the demo head's upper lip-line
  vertices and their lower-lip copies (the head's ``upper_lip_line`` / ``lower_lip_line``
  groups, which coincide when the mouth is shut);
- **typical open-vowel gap**: per sequence, the median gap of the *raw* model at the middle
  frames of its open-vowel segments (:data:`server.living.train_closure.OPEN_VOWELS`); the
  same reference is used before and after the closure layer;
- **closed**: a frame whose gap is under 30 % of the typical open-vowel gap;
- **p/b/m closure rate**: the share of p, b and m segments of at least 40 ms (festival's phone
  timings) whose middle frame (the frame holding the segment's midpoint) is closed;
- **open-vowel false closures**: the share of open-vowel middle frames that are closed;
- the same two rates for the corpus' own target motion (the reference the model was trained
  toward), and the detector's frame precision and recall against the frames' phones (p, b, m
  at the frame centre) at its threshold.

``closure_weights`` comes from the audio alone, ``close_lips`` uses :func:`lip_closure` of the
demo head at amount 1. Results: ``bench/results/lip_closure.json``.

    OMP_NUM_THREADS=1 .venv/bin/python bench/lip_closure.py [--work out/lip-closure]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLOSED_SHARE = 0.3


def held_out_sequences(work: Path) -> list[dict]:
    """The recipe's test split built in ``work`` (reused), with each sequence's phone timings
    in seconds into its audio."""
    from server.demo import corpus
    from server.demo.recipe import RECIPE, split_voices
    from server.demo.voices import synthesize

    train_voices, test_voices = split_voices()
    specs = [s for s in corpus.plan(train_voices, test_voices, 0, 0, seed=RECIPE["seed"],
                                    test_sentences=len(corpus.HELD_OUT_SENTENCES))
             if s.split == "test"]
    work.mkdir(parents=True, exist_ok=True)
    sequences = []
    for spec in specs:
        path = work / f"{spec.name}.npz"
        if not path.is_file():
            corpus.make_sequence(spec, work)
        with np.load(path, allow_pickle=False) as data:
            audio, labels = data["audio"], data["phones"]
            target_expression, target_jaw = data["expression"], data["jaw"]
        # make_sequence draws the leading silence first from the spec's generator.
        lead = corpus._pad_seconds(np.random.default_rng(spec.seed))[0]
        phones = [(p, s + lead, e + lead) for p, s, e in synthesize(spec.text, spec.voice).phones]
        if not np.array_equal(corpus.frame_phones(phones, len(labels)), labels):
            raise RuntimeError(f"{spec.name}: the phone timings do not match the sequence's "
                               "frame labels; rebuild the work folder.")
        sequences.append({"name": spec.name, "text": spec.text, "emotion": spec.emotion,
                          "audio": audio, "labels": labels, "phones": phones,
                          "target": (target_expression, target_jaw)})
    return sequences


def main() -> int:
    from server.animator import Animator
    from server.audio import clip_from_samples
    from server.checkpoints import read_model
    from server.demo.corpus import CLOSURES, PHONE_SET
    from server.demo.head import build_demo_head
    from server.flame import flame_vertices
    from server.living.closure import close_lips, closure_weights, default_detector, lip_closure
    from server.living.train_closure import MIN_SEGMENT_S, OPEN_VOWELS, middle_frames

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "lip-closure",
                        help="folder for the held-out sequences (default: out/lip-closure)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" /
                        "lip_closure.json")
    args = parser.parse_args()

    head = build_demo_head()
    flame = head.flame
    upper, lower = head.groups["upper_lip_line"], head.groups["lower_lip_line"]
    started = time.perf_counter()
    closure = lip_closure(flame)
    closure_seconds = time.perf_counter() - started
    animator = Animator(read_model(None), device="cpu", backend="onnx", threads=1)
    emotions = list(animator.loaded.config.emotions)
    style = animator.loaded.config.styles[0]
    detector = default_detector()

    def gap(expression: np.ndarray, jaw: np.ndarray) -> np.ndarray:
        vertices = flame_vertices(flame, expression, jaw)
        return np.linalg.norm(vertices[:, upper] - vertices[:, lower], axis=-1).mean(axis=1)

    counts = {k: [0, 0] for k in ("before", "after", "target")}  # closed p/b/m, segments
    vowel_counts = {k: [0, 0] for k in counts}
    frame_hits = frame_detected = frame_true = 0
    per_sequence = []
    for sequence in held_out_sequences(args.work):
        clip = clip_from_samples(sequence["audio"], source=sequence["name"])
        take = animator.generate(clip, {"emotion": emotions[sequence["emotion"]],
                                        "intensity": "medium", "style": style})
        frames = min(take.frames, len(sequence["labels"]))
        weights = closure_weights(clip.samples, take.frames)[:frames]
        expression, jaw = take.expression[:frames], take.jaw[:frames]
        closed_expression, closed_jaw = close_lips(expression, jaw, weights, closure)
        target_expression, target_jaw = (a[:frames] for a in sequence["target"])
        gaps = {"before": gap(expression, jaw), "after": gap(closed_expression, closed_jaw),
                "target": gap(target_expression, target_jaw)}
        bilabial = middle_frames(sequence["phones"], CLOSURES, frames, MIN_SEGMENT_S)
        vowels = middle_frames(sequence["phones"], OPEN_VOWELS, frames)
        typical = float(np.median(gaps["before"][vowels]))
        row = {"name": sequence["name"], "text": sequence["text"],
               "typical_open_gap_mm": round(typical * 1000, 3), "bilabial": int(len(bilabial)),
               "open_vowels": int(len(vowels))}
        for key, values in gaps.items():
            closed = values < CLOSED_SHARE * typical
            counts[key][0] += int(closed[bilabial].sum())
            counts[key][1] += len(bilabial)
            vowel_counts[key][0] += int(closed[vowels].sum())
            vowel_counts[key][1] += len(vowels)
            row[f"{key}_closed"] = int(closed[bilabial].sum())
            row[f"{key}_vowels_closed"] = int(closed[vowels].sum())
        truth = np.isin(np.array(PHONE_SET)[sequence["labels"][:frames]], CLOSURES)
        detected = detector.probability(clip.samples, take.frames)[:frames] >= detector.threshold
        frame_hits += int(np.sum(truth & detected))
        frame_detected += int(detected.sum())
        frame_true += int(truth.sum())
        per_sequence.append(row)
        print(f"{sequence['name']}: p/b/m closed {row['before_closed']}→{row['after_closed']} "
              f"of {len(bilabial)}, open vowels closed {row['before_vowels_closed']}→"
              f"{row['after_vowels_closed']} of {len(vowels)}  ({sequence['text']})", flush=True)

    rng = np.random.default_rng(0)
    long_expression = rng.normal(0, 1, (1500, flame.n_expression)).astype(np.float32)
    long_jaw = rng.normal(0, 0.1, (1500, 3)).astype(np.float32)
    long_weights = rng.uniform(0, 1, 1500)
    times = []
    for _ in range(20):
        start = time.perf_counter()
        close_lips(long_expression, long_jaw, long_weights, closure)
        times.append(time.perf_counter() - start)

    def share(pair: list[int]) -> float:
        return round(pair[0] / max(pair[1], 1), 4)

    results = {
        "held_out": "festival:cmu_us_slt_arctic_hts speaking the 12 held-out sentences",
        "model": "built-in demo model, ONNX backend",
        "closed_below_share_of_typical_open_vowel_gap": CLOSED_SHARE,
        "min_segment_seconds": MIN_SEGMENT_S,
        "bilabial_segments": counts["before"][1],
        "open_vowel_segments": vowel_counts["before"][1],
        "bilabial_closed": {k: share(v) for k, v in counts.items()},
        "open_vowels_closed": {k: share(v) for k, v in vowel_counts.items()},
        "detector_frames": {"threshold": detector.threshold,
                            "precision": round(frame_hits / max(frame_detected, 1), 4),
                            "recall": round(frame_hits / max(frame_true, 1), 4)},
        "close_lips_1500_frames_ms": round(1000 * float(np.median(times)), 3),
        "lip_closure_seconds": round(closure_seconds, 3),
        "inner_lip_pairs": int(len(closure.upper)),
        "sequences": per_sequence,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "sequences"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
