# SPDX-License-Identifier: GPL-3.0-or-later
"""Speech activity of a take's audio at 25 fps: energy, pauses, phrase ends, stresses, pitch.

From the 16 kHz samples, per output frame (640 samples, 40 ms):

- ``energy``: the frame's RMS level in dB relative to the take's loud speech (its 95th
  percentile), floored at -60 dB;
- ``envelope``: the amplitude envelope in [0, 1], 10^(dB/20) smoothed over 3 frames (120 ms),
  the syllable-rate modulation that drives nods;
- ``speaking``: frames within 25 dB of loud speech, with gaps shorter than 200 ms bridged (the
  closures of stop consonants are not pauses);
- ``pauses``: the remaining silent runs of at least 200 ms (a common lower bound for silent
  pauses in speech research, e.g. Goldman-Eisler 1968, *Psycholinguistics: Experiments in
  Spontaneous Speech*, who counted pauses from 250 ms; 200 ms catches the shorter breaks
  between phrases); ``phrase_ends`` are the frames where speech stops before a pause;
- ``stresses``: frames of prominent energy peaks, the stand-in for stressed syllables: a local
  maximum of the envelope that rises at least 6 dB above the lowest level in the 200 ms before
  it, at least 160 ms after the previous one (syllables come at about 4-5 per second);
- ``pitch``: the fundamental frequency (Hz, 0 where unvoiced) from the normalised
  autocorrelation of a 40 ms frame, searched over 70-400 Hz, voiced when the peak exceeds 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 16_000
FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS
FLOOR_DB = -60.0
SPEECH_DB = -25.0  # within 25 dB of loud speech counts as speaking
MIN_PAUSE_S = 0.2
STRESS_RISE_DB = 6.0
STRESS_SPACING_S = 0.16
PITCH_RANGE_HZ = (70.0, 400.0)


@dataclass
class SpeechActivity:
    """What the living layers know about the speech of a take, per 25 fps frame."""

    energy: np.ndarray  # (T,) dB relative to loud speech, >= FLOOR_DB
    envelope: np.ndarray  # (T,) amplitude envelope in [0, 1]
    speaking: np.ndarray  # (T,) bool
    pitch: np.ndarray  # (T,) Hz, 0 where unvoiced
    stresses: np.ndarray  # (K,) frame indices of stressed-syllable energy peaks
    phrase_ends: np.ndarray  # (P,) frame indices where a phrase ends before a pause
    pauses: list[tuple[int, int]] = field(default_factory=list)  # [start, end) frame runs

    @property
    def frames(self) -> int:
        return int(len(self.energy))

    def onsets(self) -> np.ndarray:
        """The envelope's rises (T,): its positive frame-to-frame increase, the syllable onsets."""
        return np.maximum(np.diff(self.envelope, prepend=self.envelope[:1]), 0.0)

    def to_dict(self) -> dict[str, list]:
        """Plain lists (JSON), for the worker's reply and a take stored in a .blend."""
        return {"energy": np.round(self.energy, 3).tolist(),
                "envelope": np.round(self.envelope, 5).tolist(),
                "speaking": [int(v) for v in self.speaking],
                "pitch": np.round(self.pitch, 2).tolist(),
                "stresses": [int(v) for v in self.stresses],
                "phrase_ends": [int(v) for v in self.phrase_ends],
                "pauses": [[int(a), int(b)] for a, b in self.pauses]}

    @classmethod
    def from_dict(cls, data: dict) -> SpeechActivity:
        """The inverse of :meth:`to_dict`; ``ValueError`` naming the field when ``data`` is not
        one (lengths that disagree, frame indices outside the take, non-finite numbers)."""
        if not isinstance(data, dict):
            raise ValueError("The speech activity is not a mapping.")
        try:
            energy = np.asarray(data["energy"], np.float64).ravel()
            frames = len(energy)
            arrays = {"energy": energy}
            for name in ("envelope", "pitch", "speaking"):
                arrays[name] = np.asarray(data[name], np.float64).ravel()
            indices = {name: np.asarray(data[name], np.int64).ravel()
                       for name in ("stresses", "phrase_ends")}
            pauses = np.asarray(data["pauses"], np.int64).reshape(-1, 2)
        except KeyError as exc:
            raise ValueError(f"The speech activity lacks its '{exc.args[0]}' field.") from None
        except (TypeError, ValueError, OverflowError):
            raise ValueError("The speech activity holds something that is not a number.") \
                from None
        for name, values in arrays.items():
            if len(values) != frames or not np.all(np.isfinite(values)):
                raise ValueError(f"The speech activity's '{name}' does not have {frames} finite "
                                 "values.")
        for name, values in [*indices.items(), ("pauses", pauses.ravel())]:
            if np.any(values < 0) or np.any(values > frames):
                raise ValueError(f"The speech activity's '{name}' lies outside its {frames} "
                                 "frames.")
        return cls(energy=energy, envelope=arrays["envelope"],
                   speaking=arrays["speaking"] > 0.5, pitch=arrays["pitch"],
                   stresses=indices["stresses"], phrase_ends=indices["phrase_ends"],
                   pauses=[(int(a), int(b)) for a, b in pauses])


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) runs of True in a boolean array."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def frame_pitch(frames: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
    """F0 in Hz per row of ``frames`` (N, L), 0 where unvoiced (normalised autocorrelation)."""
    lo = int(rate / PITCH_RANGE_HZ[1])
    hi = int(rate / PITCH_RANGE_HZ[0])
    x = frames - frames.mean(axis=1, keepdims=True)
    n = x.shape[1]
    size = 1 << int(np.ceil(np.log2(2 * n)))
    spectrum = np.fft.rfft(x, size, axis=1)
    ac = np.fft.irfft(spectrum * np.conj(spectrum), size, axis=1)[:, : hi + 1]
    energy = ac[:, :1]
    # Normalise by the overlap so longer lags are not penalised (unbiased estimate).
    ac = ac / np.maximum(energy, 1e-12) * (n / np.maximum(n - np.arange(hi + 1), 1))
    lag = lo + np.argmax(ac[:, lo: hi + 1], axis=1)
    peak = ac[np.arange(len(ac)), lag]
    voiced = (peak > 0.5) & (energy[:, 0] > 1e-8)
    return np.where(voiced, rate / lag, 0.0)


def speech_activity(samples: np.ndarray, frames: int | None = None,
                    rate: int = SAMPLE_RATE) -> SpeechActivity:
    """The :class:`SpeechActivity` of mono ``samples`` at ``rate`` (16 kHz in the product), for
    ``frames`` frames at 25 fps (default: as many as the samples fill)."""
    samples = np.asarray(samples, np.float64).ravel()
    hop = rate // FPS
    if frames is None:
        frames = len(samples) // hop
    needed = frames * hop
    if len(samples) < needed:
        samples = np.pad(samples, (0, needed - len(samples)))
    blocks = samples[:needed].reshape(frames, hop) if frames else np.zeros((0, hop))
    rms = np.sqrt(np.mean(blocks**2, axis=1)) if frames else np.zeros(0)
    level = 20 * np.log10(np.maximum(rms, 1e-10))
    reference = np.percentile(level, 95) if frames else 0.0
    energy = np.maximum(level - reference, FLOOR_DB)
    amplitude = np.clip(10 ** (energy / 20), 0, 1)
    envelope = np.convolve(np.pad(amplitude, 1, mode="edge"), np.ones(3) / 3, "valid") \
        if frames else amplitude
    speaking = energy > SPEECH_DB
    min_pause = int(round(MIN_PAUSE_S * FPS))
    for start, end in _runs(~speaking):
        if end - start < min_pause and start > 0 and end < frames:
            speaking[start:end] = True
    pauses = [(a, b) for a, b in _runs(~speaking) if b - a >= min_pause]
    phrase_ends = np.array([a for a, _ in pauses if a > 0], np.int64)

    smooth_db = 20 * np.log10(np.maximum(envelope, 1e-3))
    look_back = int(round(0.2 * FPS))
    spacing = int(round(STRESS_SPACING_S * FPS))
    stresses: list[int] = []
    for t in range(1, frames - 1):
        if not (envelope[t] >= envelope[t - 1] and envelope[t] > envelope[t + 1]):
            continue
        if not speaking[t] or smooth_db[t] - smooth_db[max(0, t - look_back): t].min() < \
                STRESS_RISE_DB:
            continue
        if stresses and t - stresses[-1] < spacing:
            if envelope[t] > envelope[stresses[-1]]:
                stresses[-1] = t
            continue
        stresses.append(t)

    window = 2 * hop  # 40 ms analysis windows centred on each frame
    padded = np.pad(samples[:needed], (window // 4, window))
    if frames:
        starts = np.arange(frames) * hop
        analysis = np.stack([padded[s: s + window] for s in starts])
        pitch = frame_pitch(analysis, rate) * speaking
    else:
        pitch = np.zeros(0)
    return SpeechActivity(energy=energy, envelope=envelope, speaking=speaking, pitch=pitch,
                          stresses=np.array(stresses, np.int64), phrase_ends=phrase_ends,
                          pauses=pauses)
