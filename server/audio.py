# SPDX-License-Identifier: GPL-3.0-or-later
"""Speech in: decode any common audio file to 16 kHz mono float, trim, check, normalise.

EMOTE runs at 25 fps on 16 kHz audio, so one output frame is 640 samples and a clip of S samples
gives T = floor(S / 640) frames.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
MIN_FRAMES = 8  # one FLINT latent
MIN_SECONDS = MIN_FRAMES / FPS
SILENCE_PEAK = 1e-4  # −80 dBFS


class AudioError(ValueError):
    """The audio cannot be used; the message says why and what to do."""


@dataclass
class AudioClip:
    samples: np.ndarray  # (S,) float32, 16 kHz mono, in [-1, 1]
    source: str
    source_rate: int
    source_channels: int
    warnings: list[str] = field(default_factory=list)
    _hash: str | None = field(default=None, repr=False, compare=False)

    @property
    def frames(self) -> int:
        return frame_count(len(self.samples))

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    def content_hash(self) -> str:
        """Identity of the samples, the key of the feature cache (computed once per clip)."""
        if self._hash is None:
            self._hash = hashlib.blake2b(self.samples.tobytes(), digest_size=16).hexdigest()
        return self._hash


def frame_count(samples: int) -> int:
    """Output frames at 25 fps for ``samples`` at 16 kHz."""
    return samples // SAMPLES_PER_FRAME


def normalise(samples: np.ndarray) -> np.ndarray:
    """wav2vec2's processor: zero mean, unit variance over the whole clip (eps 1e-7)."""
    samples = samples.astype(np.float64)
    return ((samples - samples.mean()) / np.sqrt(samples.var() + 1e-7)).astype(np.float32)


def _decode_soundfile(path: Path) -> tuple[np.ndarray, int] | None:
    import soundfile

    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        return None
    return data, int(rate)


def _decode_pyav(path: Path) -> tuple[np.ndarray, int] | None:
    """m4a/aac/video containers via PyAV, when it is installed."""
    try:
        import av
    except ImportError:
        return None
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate or stream.rate
            chunks = []
            for frame in container.decode(stream):
                array = frame.to_ndarray()
                if array.dtype.kind == "i":
                    array = array / float(np.iinfo(array.dtype).max)
                if frame.format.is_planar:
                    chunks.append(np.asarray(array, np.float32).T)
                else:
                    channels = len(frame.layout.channels)
                    chunks.append(np.asarray(array, np.float32).reshape(-1, channels))
    except (av.FFmpegError, ValueError, OSError):
        return None
    if not chunks:
        return np.zeros((0, 1), np.float32), int(rate or SAMPLE_RATE)
    return np.concatenate(chunks), int(rate)


def load_audio(path: str | Path, start: float | None = None, end: float | None = None,
               allow_low_rate: bool = False) -> AudioClip:
    """Read ``path`` as 16 kHz mono float32, keeping ``[start, end)`` seconds when given.

    Audio sampled below 16 kHz (telephone audio) lacks the upper speech band wav2vec2 was
    trained on; it is refused unless ``allow_low_rate``, and then used with a warning.
    Raises :class:`AudioError` with a user-facing sentence for every unusable input.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"Audio file not found: '{path}'.")
    if path.is_dir():
        raise AudioError(f"'{path}' is a folder, not an audio file.")
    if path.stat().st_size == 0:
        raise AudioError(f"The audio file '{path}' is empty (0 bytes).")
    decoded = _decode_soundfile(path) or _decode_pyav(path)
    if decoded is None:
        raise AudioError(
            f"'{path}' is not an audio file that can be read (supported: wav, flac, ogg, mp3; "
            "m4a/aac with PyAV installed).")
    data, rate = decoded
    if rate < SAMPLE_RATE and not allow_low_rate:
        raise AudioError(
            f"'{path.name}' is sampled at {rate} Hz: speech above {rate // 2} Hz is missing and "
            "lip-sync needs 16 kHz or better. Use a better recording, or allow low sample "
            "rates (--allow-low-rate) to use it anyway.")
    if data.shape[0] == 0:
        raise AudioError(f"'{path}' contains no audio samples.")
    clip = AudioClip(samples=np.zeros(0, np.float32), source=str(path), source_rate=rate,
                     source_channels=int(data.shape[1]))
    samples = data.mean(axis=1)  # mono by channel mean
    duration = len(samples) / rate
    samples = _trim(samples, rate, duration, start, end, path)
    if rate != SAMPLE_RATE:
        import soxr

        samples = soxr.resample(samples, rate, SAMPLE_RATE, quality="HQ")
        if rate < SAMPLE_RATE:
            clip.warnings.append(
                f"'{path.name}' is sampled at {rate} Hz: speech above {rate // 2} Hz is missing, "
                "so lip-sync may be less precise than with 16 kHz or better.")
    clip.samples = np.clip(samples, -1.0, 1.0).astype(np.float32)
    check_usable(clip)
    return clip


def _trim(samples: np.ndarray, rate: int, duration: float, start: float | None,
          end: float | None, path: Path) -> np.ndarray:
    if start is None and end is None:
        return samples
    start = 0.0 if start is None else float(start)
    end = duration if end is None else float(end)
    if start < 0 or end <= start:
        raise AudioError(f"Invalid audio range {start:.3f}–{end:.3f} s: start must be ≥ 0 and "
                         "before the end.")
    if start >= duration:
        raise AudioError(f"The range starts at {start:.3f} s but '{path.name}' is only "
                         f"{duration:.3f} s long.")
    return samples[int(round(start * rate)): int(round(min(end, duration) * rate))]


def check_usable(clip: AudioClip) -> None:
    """Too short or silent clips cannot drive a face; say so."""
    if clip.frames < MIN_FRAMES:
        raise AudioError(
            f"'{Path(clip.source).name}' gives {clip.seconds:.2f} s of audio; at least "
            f"{MIN_SECONDS:.2f} s ({MIN_FRAMES} frames at {FPS} fps) is needed.")
    if float(np.abs(clip.samples).max()) < SILENCE_PEAK:
        raise AudioError(f"'{Path(clip.source).name}' is silent (peak below −80 dBFS) in the "
                         "chosen range; pick a range with speech.")


def clip_from_samples(samples: np.ndarray, rate: int = SAMPLE_RATE, source: str = "<samples>"
                      ) -> AudioClip:
    """An :class:`AudioClip` from an in-memory waveform (mono or (S, C)), resampled to 16 kHz."""
    samples = np.asarray(samples, np.float32)
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if rate != SAMPLE_RATE:
        import soxr

        samples = soxr.resample(samples, rate, SAMPLE_RATE, quality="HQ")
    clip = AudioClip(samples=samples.astype(np.float32), source=source, source_rate=rate,
                     source_channels=channels)
    check_usable(clip)
    return clip
