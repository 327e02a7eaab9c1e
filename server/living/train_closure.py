# SPDX-License-Identifier: GPL-3.0-or-later
"""Train the p/b/m detector of :mod:`.closure` on the demo's synthetic corpus.

``python -m server.living.train_closure OUT`` plans a small corpus with the demo recipe's
*training* voices and generated sentences (:func:`server.demo.corpus.plan` with no test voices:
the held-out voice and :data:`~server.demo.corpus.HELD_OUT_SENTENCES` are never used), makes
each sequence's audio as the corpus does (silence, augmentation; :func:`training_sequence`)
and keeps its phone timings, in ``OUT/corpus`` (reused when already there), then trains:

- inputs: :func:`.closure.closure_features` with context (:func:`.closure.with_context`),
  standardised by the training frames' mean and standard deviation; each training sequence
  is also used once played faster or slower by a factor drawn log-uniformly from
  ``WARP_RANGE`` (:func:`warped`): formants scale with it as between speakers of different
  vocal-tract length (adult women's formants lie roughly 15-20 % above men's), a spread the
  few synthetic voices cover poorly;
- target: 1 where the lips are shut (:func:`closure_targets`): the frame's centre lies in a p,
  b or m, or the frame holds the midpoint of one; else 0;
- loss: binary cross-entropy with the positive frames weighted ``POSITIVE_WEIGHT`` (they are
  about one frame in twelve), plus an L2 penalty ``DECAY`` on the weights;
- optimiser: Adam (lr ``LR``, cosine decay to zero) over ``EPOCHS`` epochs of shuffled batches
  of ``BATCH`` frames, all drawn from one seeded generator;
- threshold: on the validation split, the one of 0.10, 0.12, …, 0.90 that marks the most
  middle frames of p/b/m segments of at least 40 ms among those marking at most
  ``MAX_VOWEL_CLOSED`` of the open-vowel middle frames (the benchmark's two measures).

Writes ``OUT/closure_detector.npz`` and ``OUT/closure_detector.json`` (the settings and the
validation metrics); copy the ``.npz`` over ``server/living/closure_detector.npz`` to ship it.
The same command gives the same detector on the same machine (the corpus is seeded; espeak-ng
moves phone times by about a millisecond between runs, see :mod:`server.demo.corpus`).
Runtime with the defaults on one core (``OMP_NUM_THREADS=1``): about 8 minutes for the corpus
(3,800 sequences) and 2 for the features and training, with about 8 GB of memory at the peak.
The shipped detector's report is ``server/living/closure_detector.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from .closure import FPS, SAMPLES_PER_FRAME, ClosureDetector, closure_features, with_context

SEED = 0
SEQUENCES = {"train": 3600, "val": 200}
HIDDEN = 64
EPOCHS = 30
BATCH = 256
LR = 2e-3
DECAY = 1e-3
POSITIVE_WEIGHT = 2.0
MAX_VOWEL_CLOSED = 0.02
MIN_SEGMENT_S = 0.04  # the p/b/m segments the benchmark judges
WARP_RANGE = (0.87, 1.15)  # speed factors of the warped copies (log-uniform)
# The open vowels: the corpus' vowels whose jaw target opens the mouth at least 0.13 rad.
OPEN_VOWELS = ("aa", "ae", "ah", "ao", "aw", "ay", "eh", "ow", "oy")


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def training_sequence(spec: Any) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """The audio (16 kHz float32, whole frames) and phone timings (seconds into the audio) of
    one planned corpus sequence, made as :func:`server.demo.corpus.make_sequence` makes its
    audio (the same generator draws: silence, then augmentation); the motion is not needed."""
    from ..demo import corpus
    from ..demo.voices import synthesize

    rng = np.random.default_rng(spec.seed)
    utterance = synthesize(spec.text, spec.voice)
    lead, trail = corpus._pad_seconds(rng)
    audio = corpus.padded(utterance.audio, lead, trail)
    if spec.augment:
        audio = corpus.augment(audio, rng)
    else:
        audio = (0.7 * audio / (np.abs(audio).max() + 1e-9)).astype(np.float32)
    audio = audio[: len(audio) // SAMPLES_PER_FRAME * SAMPLES_PER_FRAME]
    return audio, [(p, s + lead, e + lead) for p, s, e in utterance.phones]


def build_training_corpus(folder: Path, sequences: dict[str, int] = SEQUENCES,
                          seed: int = SEED) -> list[dict[str, Any]]:
    """The detector's corpus in ``folder`` (one ``.npz`` per sequence: audio, phone names,
    starts and ends; existing files are reused): training voices and generated sentences
    only. Returns the sequences: split, audio, phones."""
    from ..demo.corpus import plan
    from ..demo.recipe import split_voices

    train_voices, _ = split_voices()
    specs = plan(train_voices, [], sequences["train"], sequences["val"], seed=seed,
                 test_sentences=0)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for done, spec in enumerate(specs, 1):
        path = folder / f"{spec.name}.npz"
        if not path.is_file():
            audio, phones = training_sequence(spec)
            np.savez(path, audio=audio, names=np.array([p for p, _, _ in phones]),
                     starts=np.array([s for _, s, _ in phones]),
                     ends=np.array([e for _, _, e in phones]))
        with np.load(path, allow_pickle=False) as data:
            phones = list(zip(data["names"].tolist(), data["starts"].tolist(),
                              data["ends"].tolist(), strict=True))
            out.append({"split": spec.split, "audio": data["audio"], "phones": phones})
        if done % 200 == 0:
            _log(f"corpus {done}/{len(specs)}")
    return out


def middle_frames(phones: list[tuple[str, float, float]], names: tuple[str, ...], frames: int,
                  min_seconds: float = 0.0) -> np.ndarray:
    """The frame holding the midpoint of each segment of ``names`` at least ``min_seconds``
    long (the frames the lip-closure benchmark judges)."""
    middles = [int((s + e) / 2 * FPS) for p, s, e in phones
               if p in names and e - s >= min_seconds - 1e-9]
    return np.array(sorted({m for m in middles if m < frames}), np.int64)


def closure_targets(phones: list[tuple[str, float, float]], frames: int) -> np.ndarray:
    """Frames (T,) where the lips are shut: the frame's centre lies in a p, b or m, or the
    frame holds the midpoint of one (a short closure between two frame centres)."""
    from ..demo.corpus import CLOSURES

    centres = (np.arange(frames) + 0.5) / FPS
    target = np.zeros(frames, bool)
    for phone, start, end in phones:
        if phone in CLOSURES:
            target |= (centres >= start) & (centres < end)
    target[middle_frames(phones, CLOSURES, frames)] = True
    return target


def sequence_frames(audio: np.ndarray, phones: list[tuple[str, float, float]]
                    ) -> dict[str, np.ndarray]:
    """One sequence's context features (T, FEATURES), closure targets (T,), and the middle
    frames of its p/b/m segments of at least 40 ms and of its open vowels (T,) bool."""
    from ..demo.corpus import CLOSURES

    frames = len(audio) // SAMPLES_PER_FRAME
    bilabial = np.zeros(frames, bool)
    bilabial[middle_frames(phones, CLOSURES, frames, MIN_SEGMENT_S)] = True
    vowels = np.zeros(frames, bool)
    vowels[middle_frames(phones, OPEN_VOWELS, frames)] = True
    return {"inputs": with_context(closure_features(audio, frames)).astype(np.float32),
            "target": closure_targets(phones, frames), "bilabial": bilabial,
            "vowels": vowels}


def warped(audio: np.ndarray, phones: list[tuple[str, float, float]], factor: float
           ) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """The sequence played ``factor`` times faster (linear interpolation, whole frames):
    formants and pitch scale by ``factor`` as between a longer and a shorter vocal tract,
    phone times by 1 / ``factor``."""
    length = int(len(audio) / factor) // SAMPLES_PER_FRAME * SAMPLES_PER_FRAME
    out = np.interp(np.arange(length) * factor, np.arange(len(audio)), audio)
    return out.astype(np.float32), [(p, s / factor, e / factor) for p, s, e in phones]


def corpus_frames(sequences: list[tuple[np.ndarray, list[tuple[str, float, float]]]]
                  ) -> dict[str, np.ndarray]:
    """:func:`sequence_frames` of (audio, phones) pairs, concatenated."""
    parts = [sequence_frames(audio, phones) for audio, phones in sequences]
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def train_detector(inputs: np.ndarray, target: np.ndarray, seed: int = SEED,
                   hidden: int = HIDDEN, epochs: int = EPOCHS) -> ClosureDetector:
    """Fit the detector's perceptron with Adam (see the module's description)."""
    rng = np.random.default_rng(seed)
    mean = inputs.mean(axis=0, dtype=np.float64)
    scale = inputs.std(axis=0, dtype=np.float64) + 1e-3
    x = (inputs - mean.astype(np.float32)) / scale.astype(np.float32)  # float32: half the memory
    y = target.astype(np.float32)
    n, d = x.shape
    params = {"w1": rng.normal(0, 1 / np.sqrt(d), (d, hidden)).astype(np.float32),
              "b1": np.zeros(hidden, np.float32),
              "w2": rng.normal(0, 1 / np.sqrt(hidden), hidden).astype(np.float32),
              "b2": np.array(np.log(y.mean() / (1 - y.mean())), np.float32)}
    moments = {k: (np.zeros_like(p), np.zeros_like(p)) for k, p in params.items()}
    steps = epochs * (n // BATCH)
    step = 0
    for epoch in range(epochs):
        order = rng.permutation(n)
        total = 0.0
        for start in range(0, n - BATCH + 1, BATCH):
            batch = order[start: start + BATCH]
            xb, yb = x[batch], y[batch]
            h = np.tanh(xb @ params["w1"] + params["b1"])
            logit = h @ params["w2"] + params["b2"]
            p = 1 / (1 + np.exp(-np.clip(logit, -40, 40)))
            weight = np.where(yb > 0, POSITIVE_WEIGHT, 1.0)
            total += float(np.sum(weight * -(yb * np.log(p + 1e-7)
                                              + (1 - yb) * np.log(1 - p + 1e-7))))
            dlogit = weight * (p - yb) / BATCH
            dh = np.outer(dlogit, params["w2"]) * (1 - h * h)
            grads = {"w2": h.T @ dlogit + DECAY * params["w2"], "b2": dlogit.sum(),
                     "w1": xb.T @ dh + DECAY * params["w1"], "b1": dh.sum(axis=0)}
            step += 1
            lr = LR * 0.5 * (1 + np.cos(np.pi * step / steps))
            for key, grad in grads.items():
                m, v = moments[key]
                m *= 0.9
                m += 0.1 * grad
                v *= 0.999
                v += 0.001 * grad * grad
                m_hat = m / (1 - 0.9**step)
                v_hat = v / (1 - 0.999**step)
                params[key] = (params[key] - lr * m_hat / (np.sqrt(v_hat) + 1e-8)
                               ).astype(np.float32)
        if epoch % 5 == 4 or epoch == epochs - 1:
            _log(f"epoch {epoch + 1}/{epochs}: loss {total / n:.4f}")
    return ClosureDetector(mean=mean, scale=scale, hidden_weight=params["w1"].astype(np.float64),
                           hidden_bias=params["b1"].astype(np.float64),
                           output_weight=params["w2"].astype(np.float64),
                           output_bias=float(params["b2"]), threshold=0.5)


def frame_scores(closed: np.ndarray, frames: dict[str, np.ndarray]) -> dict[str, float]:
    """Frame precision and recall of ``closed`` against the targets, the share of p/b/m
    middle frames (segments ≥ 40 ms) marked closed and that of open-vowel middle frames."""
    target = frames["target"]
    hits = float(np.sum(closed & target))
    return {"precision": hits / max(float(closed.sum()), 1.0),
            "recall": hits / max(float(target.sum()), 1.0),
            "bilabial_closed": float(closed[frames["bilabial"]].mean()),
            "open_vowel_closed": float(closed[frames["vowels"]].mean())}


def choose_threshold(probability: np.ndarray, frames: dict[str, np.ndarray]
                     ) -> tuple[float, dict[str, float]]:
    """The threshold of 0.10, 0.12, …, 0.90 that closes the most p/b/m middle frames among
    those closing at most ``MAX_VOWEL_CLOSED`` of the open-vowel middle frames (0.9 when none
    qualifies)."""
    best: tuple[float, dict[str, float]] | None = None
    for threshold in np.round(np.arange(0.10, 0.901, 0.02), 2):
        scores = frame_scores(probability >= threshold, frames)
        if scores["open_vowel_closed"] > MAX_VOWEL_CLOSED:
            continue
        if best is None or scores["bilabial_closed"] > best[1]["bilabial_closed"]:
            best = (float(threshold), scores)
    return best or (0.9, frame_scores(probability >= 0.9, frames))


def train(out: Path, sequences: dict[str, int] = SEQUENCES, seed: int = SEED,
          epochs: int = EPOCHS) -> dict[str, Any]:
    """Build the corpus, train, choose the threshold; writes the detector into ``out``."""
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    corpus = build_training_corpus(out / "corpus", sequences, seed)
    built = time.perf_counter()
    _log(f"corpus ready ({built - started:.0f} s)")
    rng = np.random.default_rng(seed)
    train_sequences = [(s["audio"], s["phones"]) for s in corpus if s["split"] == "train"]
    low, high = np.log(WARP_RANGE)
    train_sequences += [warped(audio, phones, float(np.exp(rng.uniform(low, high))))
                        for audio, phones in list(train_sequences)]
    train_frames = corpus_frames(train_sequences)
    _log(f"{len(train_frames['target'])} training frames, {train_frames['target'].mean():.1%} "
         "shut")
    detector = train_detector(train_frames["inputs"], train_frames["target"], seed,
                              epochs=epochs)
    val = corpus_frames([(s["audio"], s["phones"]) for s in corpus if s["split"] == "val"])
    probability = detector.probability_of(val["inputs"].astype(np.float64))
    detector.threshold, scores = choose_threshold(probability, val)
    path = detector.save(out / "closure_detector.npz")
    report = {"seed": seed, "sequences": sequences, "hidden": HIDDEN, "epochs": epochs,
              "threshold": detector.threshold,
              "validation": {k: round(v, 4) for k, v in scores.items()},
              "corpus_seconds": round(built - started, 1),
              "training_seconds": round(time.perf_counter() - built, 1)}
    (out / "closure_detector.json").write_text(json.dumps(report, indent=1))
    _log(f"wrote {path}: {json.dumps(report)}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.living.train_closure",
                                     description="Train the p/b/m lip-closure detector on the "
                                                 "demo's synthetic corpus (training voices).")
    parser.add_argument("out", type=Path, help="work folder (corpus and detector)")
    parser.add_argument("--train", type=int, default=SEQUENCES["train"],
                        help=f"training sequences (default {SEQUENCES['train']})")
    parser.add_argument("--val", type=int, default=SEQUENCES["val"],
                        help=f"validation sequences (default {SEQUENCES['val']})")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    train(args.out, {"train": args.train, "val": args.val}, args.seed, args.epochs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
