# SPDX-License-Identifier: GPL-3.0-or-later
"""Speech in: decode any common audio file to 16 kHz mono float, trim, check, normalise.

EMOTE runs at 25 fps on 16 kHz audio, so one output frame is 640 samples and a clip of S samples
gives T = floor(S / 640) frames.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

SAMPLE_RATE = 16_000
FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
MIN_FRAMES = 8  # one FLINT latent
MIN_SECONDS = MIN_FRAMES / FPS
SILENCE_PEAK = 1e-4  # −80 dBFS
MAX_SECONDS = 2 * 3600  # the longest audio (or chosen range) animated at once: two hours
# Samples over all channels, checked from the header before decoding: two hours of 48 kHz
# stereo. Decoding keeps only the mono mix (4 bytes a frame), so memory stays bounded.
MAX_SOURCE_SAMPLES = MAX_SECONDS * 48_000 * 2
# Damaged float files may hold a few NaN/inf samples; up to this share of the clip they are
# repaired (with a warning), more means the file is broken and it is refused.
MAX_NONFINITE_FRACTION = 0.001
_BLOCK_FRAMES = 1 << 20


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


NORMALISE_BLOCK = 1 << 20  # samples per block: float64 work without a float64 copy of an hour


def normalise(samples: np.ndarray) -> np.ndarray:
    """wav2vec2's processor: zero mean, unit variance over the whole clip (eps 1e-7), computed in
    float64 a block at a time (a whole-clip float64 copy of 10 minutes is 77 MB, twice)."""
    samples = np.asarray(samples)
    blocks = range(0, len(samples), NORMALISE_BLOCK)
    mean = float(samples.mean(dtype=np.float64)) if len(samples) else 0.0
    squares = sum(float(np.square(samples[a:a + NORMALISE_BLOCK] - mean,
                                  dtype=np.float64).sum()) for a in blocks)
    std = np.sqrt(squares / max(len(samples), 1) + 1e-7)
    out = np.empty(len(samples), np.float32)
    for a in blocks:
        block = samples[a:a + NORMALISE_BLOCK].astype(np.float64)
        out[a:a + NORMALISE_BLOCK] = (block - mean) / std
    return out


@dataclass
class _Decoded:
    """Mono samples of the chosen range at the file's own rate, and what was learnt reading it."""

    samples: np.ndarray  # (S,) float32, not yet checked or brought into [-1, 1]
    rate: int
    channels: int
    duration: float  # seconds in the whole file
    warnings: list[str]


def _open_soundfile(handle: BinaryIO) -> Any:
    import soundfile

    try:
        return soundfile.SoundFile(handle)
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        return None


def _truncation_warning(sound: Any, path: Path) -> str | None:
    """libsndfile reads what a cut-off WAV holds and notes "data : N (should be M)" in its log;
    N of 0 or 2^32 - 1 is the placeholder streaming recorders write, not a promise."""
    for line in sound.extra_info.splitlines():
        found = re.match(r"\s*(data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", line)
        if found:
            promised, present = int(found.group(2)), int(found.group(3))
            if present < promised and promised not in (0, 0xFFFFFFFF):
                return (f"'{path.name}' is cut off: its header promises {promised:,} bytes of "
                        f"audio but the file holds {present:,}; only what is there is used.")
    return None


def _decode_soundfile(path: Path, start: float | None, end: float | None
                      ) -> _Decoded | None:
    """Read only the chosen range, a block at a time, mixing to mono as it goes, so memory is
    that of the mono range whatever the channel count; the length is checked from the header
    before anything is decoded."""
    with open(path, "rb") as handle:  # a file object: any file name, even one not in UTF-8
        sound = _open_soundfile(handle)
        if sound is None:
            return None
        with sound:
            rate, channels, total = int(sound.samplerate), int(sound.channels), int(sound.frames)
            duration = total / rate if rate else 0.0
            first, last = _range(total, rate, duration, start, end, path)
            check_length(last - first, rate, channels, path)
            samples = np.zeros(last - first, np.float32)
            sound.seek(first)
            done = 0
            while done < len(samples):
                block = sound.read(min(_BLOCK_FRAMES, len(samples) - done), dtype="float32",
                                   always_2d=True)
                if len(block) == 0:
                    break
                samples[done:done + len(block)] = block.mean(axis=1)
                done += len(block)
            warnings = [w for w in [_truncation_warning(sound, path)] if w]
    return _Decoded(samples[:done], rate, channels, duration, warnings)


def _decode_pyav(path: Path, start: float | None, end: float | None) -> _Decoded | None:
    """m4a/aac/video containers via PyAV, when it is installed."""
    try:
        import av
    except ImportError:
        return None
    try:
        with open(path, "rb") as handle, av.open(handle) as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            rate = int(stream.codec_context.sample_rate or stream.rate or SAMPLE_RATE)
            channels = 1
            chunks = []
            decoded = 0
            for frame in container.decode(stream):
                array = frame.to_ndarray()
                if array.dtype.kind == "i":
                    array = array / float(np.iinfo(array.dtype).max)
                channels = len(frame.layout.channels)
                if frame.format.is_planar:
                    array = np.asarray(array, np.float32).T
                else:
                    array = np.asarray(array, np.float32).reshape(-1, channels)
                decoded += len(array)
                # The container's duration is not always known: bound the decoding itself.
                check_length(decoded, rate, channels, path)
                chunks.append(array.mean(axis=1).astype(np.float32))
    except (av.FFmpegError, ValueError, OSError):
        return None
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    duration = len(samples) / rate
    first, last = _range(len(samples), rate, duration, start, end, path)
    return _Decoded(samples[first:last], rate, channels, duration, [])


def check_length(frames: int, rate: int, channels: int, path: Path) -> None:
    """Refuse more than :data:`MAX_SECONDS` of audio, or more than :data:`MAX_SOURCE_SAMPLES`
    samples over all channels, before they are decoded: memory grows with the length."""
    seconds = frames / rate if rate else 0.0
    if seconds > MAX_SECONDS or frames * channels > MAX_SOURCE_SAMPLES:
        raise AudioError(
            f"'{path.name}' gives {seconds / 3600:.1f} hours of audio ({channels} channel(s) at "
            f"{rate} Hz); at most {MAX_SECONDS // 3600} hours (and {MAX_SOURCE_SAMPLES:,} "
            "samples over all channels) can be animated at once. Choose a range (start/end) "
            "or split the file.")


def load_audio(path: str | Path, start: float | None = None, end: float | None = None,
               allow_low_rate: bool = False) -> AudioClip:
    """Read ``path`` as 16 kHz mono float32, keeping ``[start, end)`` seconds when given.

    Audio sampled below 16 kHz (telephone audio) lacks the upper speech band wav2vec2 was
    trained on; it is refused unless ``allow_low_rate``, and then used with a warning.
    Float audio outside [-1, 1] (a DC offset, a level above 0 dBFS) has its offset removed and
    its level scaled down rather than being clipped: wav2vec2 normalises the level anyway, so
    it gives the same take as the clean recording. Up to :data:`MAX_NONFINITE_FRACTION` of
    non-finite samples (NaN, ±inf: damaged float files) are repaired with a warning; more is
    refused. Raises :class:`AudioError` with a user-facing sentence for every unusable input.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"Audio file not found: '{path}'.")
    if path.is_dir():
        raise AudioError(f"'{path}' is a folder, not an audio file.")
    if path.stat().st_size == 0:
        raise AudioError(f"The audio file '{path}' is empty (0 bytes).")
    if not path.is_file():
        raise AudioError(f"'{path}' is not a regular file (a device, pipe or socket); give an "
                         "audio file.")
    check_range_numbers(start, end)
    decoded = _decode_soundfile(path, start, end) or _decode_pyav(path, start, end)
    if decoded is None:
        raise AudioError(
            f"'{path}' is not an audio file that can be read (supported: wav, flac, ogg, mp3; "
            "m4a/aac with PyAV installed).")
    rate = decoded.rate
    if rate < SAMPLE_RATE and not allow_low_rate:
        raise AudioError(
            f"'{path.name}' is sampled at {rate} Hz: speech above {rate // 2} Hz is missing and "
            "lip-sync needs 16 kHz or better. Use a better recording, or allow low sample "
            "rates (--allow-low-rate) to use it anyway.")
    if decoded.duration == 0:
        raise AudioError(f"'{path}' contains no audio samples.")
    clip = AudioClip(samples=np.zeros(0, np.float32), source=str(path), source_rate=rate,
                     source_channels=decoded.channels, warnings=list(decoded.warnings))
    samples = _into_range(decoded.samples, path, clip.warnings)
    if decoded.channels > 1 and len(samples) and float(np.abs(samples).max()) < SILENCE_PEAK:
        _check_channels_cancel(path, start, end)
    if rate != SAMPLE_RATE:
        import soxr

        samples = soxr.resample(samples, rate, SAMPLE_RATE, quality="HQ")
        if rate < SAMPLE_RATE:
            clip.warnings.append(
                f"'{path.name}' is sampled at {rate} Hz: speech above {rate // 2} Hz is missing, "
                "so lip-sync may be less precise than with 16 kHz or better.")
    # Only a resampler's overshoot can still be out of range here.
    clip.samples = np.clip(samples, -1.0, 1.0).astype(np.float32)
    check_usable(clip)
    return clip


def _into_range(samples: np.ndarray, path: Path, warnings: list[str]) -> np.ndarray:
    """Samples in [-1, 1] without clipping speech: remove the DC offset, then scale the level,
    then repair the few non-finite samples a damaged float file may hold."""
    finite = np.isfinite(samples)
    bad = len(samples) - int(np.count_nonzero(finite))
    if bad > MAX_NONFINITE_FRACTION * len(samples):
        raise AudioError(
            f"'{path.name}' holds {bad:,} non-finite samples (NaN or infinity) out of "
            f"{len(samples):,}: the file is damaged. Export it again from the original "
            "recording.")
    good = samples[finite] if bad else samples
    if len(good) and float(np.abs(good).max()) > 1.0:
        samples = samples - np.float32(np.mean(good, dtype=np.float64))
        good = samples[finite] if bad else samples
        peak = float(np.abs(good).max())
        if peak > 1.0:
            samples = samples / np.float32(peak)
    if bad:
        samples = np.where(np.isnan(samples), np.float32(0.0), samples)
        samples = np.clip(samples, -1.0, 1.0)  # ±inf → full scale
        warnings.append(
            f"'{path.name}' holds {bad} non-finite sample(s) (NaN or infinity); they were set to "
            "silence (NaN) or full scale (infinity).")
    return samples.astype(np.float32)


def _check_channels_cancel(path: Path, start: float | None, end: float | None) -> None:
    """A mono mix that is silent although its channels are not: one channel is the other
    inverted (a wiring or polarity mistake), so 'silent' would be a wrong diagnosis."""
    with open(path, "rb") as handle:
        sound = _open_soundfile(handle)
        if sound is None:
            return
        with sound:
            first, last = _range(int(sound.frames), int(sound.samplerate),
                                 sound.frames / sound.samplerate, start, end, path)
            sound.seek(first)
            peak = 0.0
            for block in sound.blocks(blocksize=_BLOCK_FRAMES, frames=last - first,
                                      dtype="float32", always_2d=True):
                peak = max(peak, float(np.nanmax(np.abs(block))) if len(block) else 0.0)
    if peak >= SILENCE_PEAK:
        raise AudioError(
            f"'{path.name}' is silent when mixed to mono although its channels are not: the "
            "channels cancel when mixed to mono (one is the other inverted). Fix the channel "
            "polarity or export a single channel.")


def check_range_numbers(start: float | None, end: float | None) -> None:
    """A NaN start or end would select nothing sensible (and fail deep in the trimming)."""
    for name, value in (("start", start), ("end", end)):
        if value is not None and math.isnan(float(value)):
            raise AudioError(f"The {name} of the audio range is NaN; give it in seconds, e.g. "
                             "1.5.")


def _range(frames: int, rate: int, duration: float, start: float | None, end: float | None,
           path: Path) -> tuple[int, int]:
    """The [first, last) frames of the file that ``start``/``end`` (seconds) select."""
    if start is None and end is None:
        return 0, frames
    start = 0.0 if start is None else float(start)
    end = duration if end is None else float(end)
    if start < 0 or end <= start:
        raise AudioError(f"Invalid audio range {start:.3f}–{end:.3f} s: start must be ≥ 0 and "
                         "before the end.")
    if start >= duration:
        raise AudioError(f"The range starts at {start:.3f} s but '{path.name}' is only "
                         f"{duration:.3f} s long.")
    return int(round(start * rate)), min(frames, int(round(min(end, duration) * rate)))


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
