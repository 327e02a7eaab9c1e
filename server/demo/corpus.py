# SPDX-License-Identifier: GPL-3.0-or-later
"""The synthetic training corpus of the demo model.

Speech comes from offline synthesisers (:mod:`.voices`) with their phone timings. Each phone
has an articulation target on the demo head (jaw opening and the lip components of its
expression basis); targets are blended with dominance functions (coarticulation: wider for
vowels, narrow and strong for closures), and the lips are held shut through p/b/m. Speaking
styles scale the articulation, add a smile bias and change the tempo of motion; the emotion
adds its own upper-face and mouth-corner overlay, scaled by intensity. The audio is augmented
(rate, pitch, noise, reverberation, EQ). Each sequence also keeps its frames' phones (for
stage 1's phone-recognition loss). Everything here is seeded: one command rebuilds the
same plan (sentences, voices, emotions, styles, augmentation). The espeak-ng library itself is
not repeatable bit for bit within one process (libespeak-ng 1.51: the same call, repeated,
moves phone times by about a millisecond and the length by a few to tens of milliseconds), so
a rebuilt corpus matches an earlier one in content, not in every sample.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..audio import FPS, SAMPLES_PER_FRAME
from ..protocol import EMOTIONS
from .head import EXPRESSIONS, N_EXPRESSION
from .voices import PAUSE, PHONES, SAMPLE_RATE, Utterance, Voice, synthesize, voice_group

INTENSITY_SCALE = (0.45, 0.75, 1.0)  # mild, medium, strong
PHONE_SET = tuple(sorted(PHONES))  # the order of the dataset's per-frame phone labels

# Per-phone articulation: jaw opening (radians about x) and lip components (coefficients).
_VOWELS = {
    "aa": (0.20, {}), "ae": (0.17, {"lip spread": 0.5}), "ah": (0.15, {}),
    "ao": (0.17, {"lip rounding": 0.9}), "aw": (0.18, {"lip rounding": 0.6}),
    "ay": (0.18, {"lip spread": 0.4}), "eh": (0.13, {"lip spread": 0.6}),
    "er": (0.09, {"lip rounding": 0.7}), "ey": (0.11, {"lip spread": 0.8}),
    "ih": (0.09, {"lip spread": 0.7}), "iy": (0.06, {"lip spread": 1.3}),
    "ow": (0.13, {"lip rounding": 1.3}), "oy": (0.14, {"lip rounding": 1.1}),
    "uh": (0.08, {"lip rounding": 1.0}), "uw": (0.05, {"lip rounding": 1.7}),
}
_CONSONANTS = {
    "p": (0.0, {"lip press": 1.0}), "b": (0.0, {"lip press": 0.9}),
    "m": (0.0, {"lip press": 0.7}),
    "f": (0.03, {"upper lip raise": 0.5, "lower lip depress": -0.7}),
    "v": (0.03, {"upper lip raise": 0.4, "lower lip depress": -0.6}),
    "th": (0.07, {"lips part": 0.6}), "dh": (0.06, {"lips part": 0.5}),
    "t": (0.05, {"lips part": 0.5}), "d": (0.05, {"lips part": 0.5}),
    "n": (0.05, {"lips part": 0.4}), "l": (0.07, {"lips part": 0.5}),
    "s": (0.04, {"lip spread": 0.5, "lips part": 0.4}),
    "z": (0.04, {"lip spread": 0.4, "lips part": 0.4}),
    "k": (0.08, {"lips part": 0.4}), "g": (0.08, {"lips part": 0.4}),
    "ng": (0.07, {"lips part": 0.3}),
    "ch": (0.05, {"lip rounding": 0.8, "lips part": 0.6}),
    "jh": (0.05, {"lip rounding": 0.8, "lips part": 0.6}),
    "sh": (0.05, {"lip rounding": 0.9, "lips part": 0.6}),
    "zh": (0.05, {"lip rounding": 0.8, "lips part": 0.6}),
    "r": (0.06, {"lip rounding": 0.7}), "w": (0.03, {"lip rounding": 1.6}),
    "y": (0.05, {"lip spread": 0.7}), "hh": (0.10, {"lips part": 0.3}),
    "pau": (0.0, {}),
}
CLOSURES = ("p", "b", "m")
# Dominance: how strongly a phone holds its target against its neighbours.
_DOMINANCE = {**{v: 1.0 for v in _VOWELS}, **{c: 0.7 for c in _CONSONANTS},
              "p": 3.0, "b": 3.0, "m": 2.5, "f": 2.0, "v": 2.0, "w": 1.5, "uw": 1.2,
              "pau": 0.6}

# Emotion overlays at intensity "strong" (expression coefficients), plus how much the emotion
# scales articulation.
EMOTION_OVERLAYS = {
    "Neutral": ({}, 1.0),
    "Happy": ({"mouth corners up": 1.6, "cheek raise": 1.3, "eye squint": 0.5,
               "brow raise": 0.3, "lip spread": 0.3}, 1.05),
    "Sad": ({"brow inner up": 1.8, "mouth corners down": 1.4, "brow lower": 0.3,
             "eye squint": 0.3}, 0.8),
    "Surprise": ({"brow raise": 2.0, "eye widen": 1.6, "lips part": 0.3}, 1.15),
    "Fear": ({"brow inner up": 1.4, "brow raise": 0.9, "eye widen": 1.4, "lip spread": 0.8,
              "mouth corners down": 0.5}, 1.0),
    "Disgust": ({"nose wrinkle": 1.8, "upper lip raise": 1.1, "brow lower": 0.9,
                 "eye squint": 0.7, "mouth corners down": 0.6}, 0.9),
    "Anger": ({"brow lower": 2.0, "eye squint": 0.6, "lip press": 0.5, "nose wrinkle": 0.4},
              1.15),
    "Contempt": ({"left corner up": 1.8, "eye squint": 0.3, "brow lower": 0.3}, 0.9),
}
EMOTION_JAW = {"Surprise": 0.03, "Fear": 0.015}  # extra resting jaw opening (strong)

_AMPLITUDES = (("subtle", 0.7), ("moderate", 0.9), ("broad", 1.1), ("wide", 1.3))
_BIASES = (("neutral", 0.0), ("smiley", 0.6))
_TEMPOS = (("slow", 1.35), ("relaxed", 1.15), ("brisk", 1.0), ("crisp", 0.85))


@dataclass(frozen=True)
class Style:
    """A speaking style: articulation amplitude, smile bias and tempo of motion (a multiplier
    on how long articulations take to blend)."""

    name: str
    amplitude: float
    smile: float
    tempo: float


_ALL_STYLES = [Style(f"{a}-{b}-{t}", av, bv, tv)
               for (a, av), (b, bv), (t, tv) in itertools.product(_AMPLITUDES, _BIASES, _TEMPOS)]
DEFAULT_STYLE = "moderate-neutral-brisk"
# The default style comes first: style 0 is what a user gets without choosing.
STYLES = tuple(sorted(_ALL_STYLES, key=lambda s: s.name != DEFAULT_STYLE))


def _column(name: str) -> int:
    return EXPRESSIONS.index(name)


def _coefficients(named: dict[str, float], scale: float = 1.0) -> np.ndarray:
    """Expression coefficients (N_EXPRESSION,) from {expression name: value}, times ``scale``."""
    vector = np.zeros(N_EXPRESSION)
    for name, value in named.items():
        vector[_column(name)] = value * scale
    return vector


def phone_target(phone: str) -> tuple[float, np.ndarray]:
    """(jaw opening, lip expression coefficients (N_EXPRESSION,)) of one phone."""
    jaw, lips = _VOWELS.get(phone) or _CONSONANTS.get(phone) or (0.06, {})
    return jaw, _coefficients(lips)


def articulation(phones: list[tuple[str, float, float]], frames: int, style: Style,
                 lead: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """Jaw opening (T,) and lip expression (T, N_EXPRESSION) at 25 fps from phone timings.

    Each phone's target is weighted by a dominance function centred on the phone (shifted
    ``lead`` seconds earlier: the mouth moves before the sound), whose width grows with the
    phone's duration and the style's tempo; closures then force the lips shut.
    """
    t = (np.arange(frames) + 0.5) / FPS + lead
    weights = np.full(frames, 1e-6)
    jaw = np.zeros(frames)
    lips = np.zeros((frames, N_EXPRESSION))
    for phone, start, end in phones:
        centre, duration = (start + end) / 2, max(end - start, 0.02)
        width = style.tempo * max(0.035, 0.55 * duration)
        dominance = _DOMINANCE.get(phone, 0.7) * np.exp(-0.5 * ((t - centre) / width) ** 2)
        # Inside the phone the dominance is flat at its peak.
        dominance = np.where((t >= start) & (t <= end), _DOMINANCE.get(phone, 0.7), dominance)
        target_jaw, target_lips = phone_target(phone)
        weights += dominance
        jaw += dominance * target_jaw
        lips += dominance[:, None] * target_lips
    jaw /= weights
    lips /= weights[:, None]
    jaw *= style.amplitude
    lips *= style.amplitude
    for phone, start, end in phones:
        if phone in CLOSURES:
            inside = (t >= start + 0.01) & (t <= end - 0.005)
            jaw[inside] = np.minimum(jaw[inside], 0.01)
            lips[inside, _column("lips part")] = np.minimum(lips[inside, _column("lips part")], 0)
            lips[inside, _column("lip press")] = np.maximum(lips[inside, _column("lip press")],
                                                            0.8)
    return jaw, lips


def emotion_overlay(emotion: str, intensity: int, frames: int, rng: np.random.Generator
                    ) -> tuple[np.ndarray, float, float]:
    """Expression overlay (T, N_EXPRESSION) with a slow wobble, the articulation scale and the
    extra jaw opening of ``emotion`` at ``intensity`` (1–3)."""
    coefficients, scale = EMOTION_OVERLAYS[emotion]
    k = INTENSITY_SCALE[intensity - 1]
    vector = _coefficients(coefficients, k)
    t = np.arange(frames) / FPS
    wobble = 1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.1, 0.3) * t + rng.uniform(0, 6.3))
    overlay = wobble[:, None] * vector
    return overlay, 1 + (scale - 1) * k, EMOTION_JAW.get(emotion, 0.0) * k


def motion_for(utterance: Utterance, frames: int, emotion: str, intensity: int, style: Style,
               rng: np.random.Generator, offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Expression (T, 100) and jaw (T, 3) for speech whose phones start ``offset`` s into the
    audio."""
    phones = [(p, s + offset, e + offset) for p, s, e in utterance.phones]
    overlay, scale, rest_jaw = emotion_overlay(emotion, intensity, frames, rng)
    opening, lips = articulation(phones, frames,
                                 replace(style, amplitude=style.amplitude * scale))
    expression = lips + overlay
    expression[:, _column("mouth corners up")] += style.smile
    jaw = np.zeros((frames, 3))
    jaw[:, 0] = opening + rest_jaw
    return expression.astype(np.float32), jaw.astype(np.float32)


# -- audio augmentation ---------------------------------------------------------------------------

def augment(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random EQ (one-pole tilt), reverberation (decaying noise tail), noise (20–45 dB SNR)
    and gain; the length stays the same."""
    out = audio.astype(np.float64)
    if rng.random() < 0.7:  # tilt EQ: boost or cut the highs against a one-pole low-pass
        from scipy.signal import lfilter

        alpha = rng.uniform(0.2, 0.8)
        low = lfilter([1 - alpha], [1, -alpha], out)
        out = out + rng.uniform(-0.6, 0.6) * (low - (out - low))
    if rng.random() < 0.5:
        length = int(SAMPLE_RATE * rng.uniform(0.05, 0.35))
        tail = rng.normal(0, 1, length) * np.exp(-np.arange(length) / (length / 5))
        impulse = np.concatenate([[1.0], rng.uniform(0.05, 0.3) * tail / np.abs(tail).max()])
        out = np.convolve(out, impulse)[: len(audio)]
    power = np.mean(out**2) + 1e-12
    snr = rng.uniform(20, 45)
    out = out + rng.normal(0, np.sqrt(power / 10 ** (snr / 10)), len(out))
    out *= rng.uniform(0.3, 0.9) / (np.abs(out).max() + 1e-9)
    return out.astype(np.float32)


# -- sentences ------------------------------------------------------------------------------------

_SUBJECTS = ("the baker", "my brother", "a pilot", "the old farmer", "our teacher", "the mayor",
             "a tiny mouse", "the woman next door", "every painter", "the boy with blue shoes",
             "her uncle", "the quiet judge", "a famous chef", "the postman", "my mother",
             "the choir", "a thief", "the captain", "your neighbour", "the young violinist")
_VERBS = ("bought", "painted", "carried", "found", "opened", "pushed", "watched", "fixed",
          "borrowed", "measured", "cooked", "chased", "remembered", "wrapped", "dropped",
          "polished", "pulled", "moved", "washed", "shared")
_OBJECTS = ("a map of the moon", "the broken window", "five purple plums", "a bag of beans",
            "the heavy oak table", "three white boats", "the hidden box", "a cup of warm milk",
            "the rubber ball", "a jar of fresh jam", "the shiny brass bell", "both woollen gloves",
            "the big black umbrella", "a bunch of yellow roses", "the old wooden bridge",
            "seven thick books", "the pumpkin pie", "a pair of muddy boots", "the choppy waves",
            "the sleepy puppy")
_PLACES = ("before lunch", "in the morning", "by the river", "after the show", "at the market",
           "under the bridge", "on Monday", "behind the barn", "near the beach", "all week",
           "in the garden", "at midnight", "outside the shop", "during the storm",
           "without a word", "with great care")
_EXTRAS = ("Nobody knew why.", "Wow, what a surprise!", "Please hurry up.", "Is that true?",
           "Oh no, not again.", "Maybe tomorrow.", "Look at that!", "Well, it was fine.",
           "Thank you very much.", "Who would do such a thing?", "Yes, of course.",
           "Keep it quiet.", "I can't believe it.", "Wait for me!", "Good job, everyone.")

# Sentences never produced by the generator, for held-out evaluation.
HELD_OUT_SENTENCES = (
    "Quick judges vowed to fix the wobbly bench by Thursday.",
    "We sailed away from the harbour as the sun went down.",
    "Peter's mother made a lovely apple pudding for supper.",
    "How many owls live in the forest behind your house?",
    "The geese flew over the frozen lake in a long line.",
    "I would never have guessed that the answer was so simple.",
    "Bright lamps lit the empty street while we waited.",
    "Somebody left the gate open and the sheep wandered off.",
    "Could you bring me the small blue notebook, please?",
    "The orchestra played until the audience rose to cheer.",
    "Maybe the weather will improve before the weekend.",
    "Which of these roads leads to the old mill?",
)


def sentence(rng: np.random.Generator) -> str:
    """A random sentence from the generator (about 6–16 words)."""
    text = (f"{rng.choice(_SUBJECTS).capitalize()} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} "
            f"{rng.choice(_PLACES)}.")
    if rng.random() < 0.4:
        text = f"{text} {rng.choice(_EXTRAS)}"
    return text


# -- building --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SequenceSpec:
    """Everything that decides one corpus sequence."""

    name: str
    split: str
    text: str
    voice: Voice
    emotion: int
    intensity: int
    style: int
    seed: int
    augment: bool = True


def _pad_seconds(rng: np.random.Generator) -> tuple[float, float]:
    return float(rng.uniform(0.1, 0.5)), float(rng.uniform(0.1, 0.4))


def padded(audio: np.ndarray, lead: float, trail: float) -> np.ndarray:
    """``audio`` (float32 at the voices' sample rate) with ``lead`` and ``trail`` seconds of
    silence."""
    return np.pad(audio, (int(lead * SAMPLE_RATE), int(trail * SAMPLE_RATE))).astype(np.float32)


def frame_phones(phones: list[tuple[str, float, float]], frames: int, offset: float = 0.0
                 ) -> np.ndarray:
    """Each 25 fps frame's phone (index into :data:`PHONE_SET`, at the frame's centre; silence
    where no phone is spoken) for phones starting ``offset`` s into the audio."""
    t = (np.arange(frames) + 0.5) / FPS
    labels = np.full(frames, PHONE_SET.index(PAUSE), np.int16)
    for phone, start, end in phones:
        labels[(t >= start + offset) & (t < end + offset)] = PHONE_SET.index(phone)
    return labels


def make_sequence(spec: SequenceSpec, folder: Path) -> dict:
    """Synthesise, augment and write one sequence; returns its index entry."""
    from ..train.data import write_sequence

    rng = np.random.default_rng(spec.seed)
    utterance = synthesize(spec.text, spec.voice)
    lead, trail = _pad_seconds(rng)
    audio = padded(utterance.audio, lead, trail)
    if spec.augment:
        audio = augment(audio, rng)
    else:
        audio = (0.7 * audio / (np.abs(audio).max() + 1e-9)).astype(np.float32)
    frames = len(audio) // SAMPLES_PER_FRAME
    audio = audio[: frames * SAMPLES_PER_FRAME]
    expression, jaw = motion_for(utterance, frames, EMOTIONS[spec.emotion], spec.intensity,
                                 STYLES[spec.style], rng, offset=lead)
    entry = write_sequence(folder / f"{spec.name}.npz", audio, expression, jaw,
                           emotion=spec.emotion, intensity=spec.intensity,
                           identity=STYLES[spec.style].name,
                           phones=frame_phones(utterance.phones, frames, offset=lead))
    entry.update(split=spec.split, text=spec.text, voice=spec.voice.engine + ":" +
                 spec.voice.name, rate=spec.voice.rate, pitch=spec.voice.pitch)
    return entry


def plan(train_voices: list[Voice], test_voices: list[Voice], n_train: int, n_val: int,
         seed: int = 0, test_sentences: int = len(HELD_OUT_SENTENCES)) -> list[SequenceSpec]:
    """The corpus plan: training and validation sequences from ``train_voices`` with generated
    sentences, and test sequences from ``test_voices`` speaking :data:`HELD_OUT_SENTENCES`
    (unaugmented, every emotion at medium intensity in turn). Each voice group (an engine;
    festival's other-language voices apart, see :func:`voice_group`) speaks an equal share of
    the training and validation sequences, shared in turn among its voices: one engine with many
    variants (espeak-ng) would otherwise drown the others."""
    rng = np.random.default_rng(seed)
    groups = sorted({voice_group(v) for v in train_voices})
    by_group = {g: [v for v in train_voices if voice_group(v) == g] for g in groups}
    specs = []
    for i in range(n_train + n_val):
        own = by_group[groups[i % len(groups)]]
        base = own[(i // len(groups)) % len(own)]
        voice = Voice(base.engine, base.name, rate=float(rng.uniform(0.8, 1.3)),
                      pitch=float(rng.uniform(0.85, 1.4)))
        specs.append(SequenceSpec(
            name=f"seq{i:05d}", split="train" if i < n_train else "val", text=sentence(rng),
            voice=voice, emotion=int(rng.integers(8)), intensity=int(rng.integers(1, 4)),
            style=int(rng.integers(len(STYLES))), seed=seed * 100_003 + i))
    held_out = HELD_OUT_SENTENCES[:test_sentences]
    for j, (voice, text) in enumerate(itertools.product(test_voices, held_out)):
        specs.append(SequenceSpec(
            name=f"test{j:04d}", split="test", text=text, voice=voice, emotion=j % 8,
            intensity=2, style=0,
            seed=seed * 100_003 + 90_000 + j, augment=False))
    return specs


def build_corpus(folder: str | Path, specs: Iterable[SequenceSpec], workers: int = 2,
                 progress: Callable[[int, int], None] | None = None) -> Path:
    """Write every planned sequence and the index into ``folder`` (in parallel)."""
    from concurrent.futures import ProcessPoolExecutor

    from ..train.data import write_index

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    specs = list(specs)
    entries = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(make_sequence, spec, folder) for spec in specs]
        for done, future in enumerate(futures, 1):
            entries.append(future.result())
            if progress:
                progress(done, len(specs))
    write_index(folder, entries, [s.name for s in STYLES], phones=list(PHONE_SET))
    (folder / "corpus.json").write_text(json.dumps({
        "styles": [s.__dict__ for s in STYLES], "emotion_overlays": {
            k: v[0] for k, v in EMOTION_OVERLAYS.items()}}, indent=1))
    return folder
