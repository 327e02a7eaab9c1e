# SPDX-License-Identifier: GPL-3.0-or-later
"""Head motion on the FLAME neck joint: speech-driven nods and tilts, idle sway, emotion posture.

The model and its numbers (angles: + pitch = face down, + yaw = toward the subject's left,
+ roll = toward the right shoulder):

- **Speech.** Head movement follows the prosody: nods fall on stressed syllables and phrase
  boundaries (Graf, Cosatto, Strom & Huang 2002, *Visual prosody: facial movements accompanying
  speech*, IEEE FG: nods of a few degrees at pitch accents, rotations mostly within ±5 degrees)
  and head motion correlates with F0 and amplitude (Yehia, Kuratate & Vatikiotis-Bateson 2002,
  *Linking facial animation, head motion and speech acoustics*, J. Phonetics 30:555-568;
  Munhall et al. 2004, *Visual prosody and speech intelligibility*, Psychol. Sci. 15:133-137).
  Each stressed syllable (an energy peak, :mod:`.speech`) gives a downward nod, a raised-cosine
  bump 400 ms wide centred on the peak, of 1.5 degrees × the peak's envelope value; each phrase
  end a 2.5 degree nod 600 ms wide with a 1.5 degree tilt and a 1 degree turn of random sign;
  higher pitch lifts the head, −0.8 degrees per standard deviation of F0 (voiced frames,
  smoothed over 300 ms).
- **Idle.** Slow sway: band-limited noise over 0.05-0.4 Hz with RMS 0.8 degrees (pitch),
  1.0 (yaw) and 0.5 (roll).
- **Posture** (the product's settings, in the directions of Wallbott 1998, *Bodily expression
  of emotion*, Eur. J. Soc. Psychol. 28:879-896: sadness head down, anger head forward,
  surprise and joy head up/back): Sad +6 degrees pitch, Anger +3 (the neck joint only rotates:
  "forward" is the chin lowered toward the listener), Surprise −5, Happy −2, Fear −3, Disgust
  −2 with a 3 degree turn away, Contempt −2 with a 2 degree turn and a 3 degree tilt; weighted
  by the per-frame emotion weights (clipped to [0, 1]) and smoothed over 0.5 s.
- **Limits.** The sum is clipped to |pitch| ≤ 15, |yaw| ≤ 20, |roll| ≤ 10 degrees (well inside
  the neck's range; conversational head rotations stay within a few degrees).

``strength`` scales everything (0: the neck stays exactly at rest); ``speech``, ``idle`` and
``posture`` scale the parts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .rotations import euler_to_axis_angle
from .speech import FPS, SpeechActivity

NOD_DEG = 1.5
NOD_WIDTH_S = 0.4
PHRASE_NOD_DEG = 2.5
PHRASE_WIDTH_S = 0.6
PHRASE_TILT_DEG = 1.5
PHRASE_TURN_DEG = 1.0
F0_LIFT_DEG = 0.8
IDLE_BAND_HZ = (0.05, 0.4)
IDLE_RMS_DEG = np.array([0.8, 1.0, 0.5])
LIMITS_DEG = np.array([15.0, 20.0, 10.0])  # pitch, yaw, roll
POSTURE_DEG = {
    "Sad": (6.0, 0.0, 0.0), "Anger": (3.0, 0.0, 0.0), "Surprise": (-5.0, 0.0, 0.0),
    "Happy": (-2.0, 0.0, 0.0), "Fear": (-3.0, 0.0, 0.0), "Disgust": (-2.0, 3.0, 0.0),
    "Contempt": (-2.0, 2.0, 3.0),
}


@dataclass
class HeadMotion:
    """Neck rotation per frame: ``neck`` axis-angle (T, 3), and its parts as (pitch, yaw,
    roll) degrees (T, 3): ``speech``, ``idle``, ``posture`` (``angles`` = their clipped sum)."""

    neck: np.ndarray
    angles: np.ndarray
    speech: np.ndarray
    idle: np.ndarray
    posture: np.ndarray


def _bump(frames: int, centre: int, width_s: float) -> np.ndarray:
    """A raised cosine (T,) of height 1, ``width_s`` wide, centred on frame ``centre``."""
    t = (np.arange(frames) - centre) / FPS
    half = width_s / 2
    return np.where(np.abs(t) < half, 0.5 * (1 + np.cos(np.pi * t / half)), 0.0)


def _smooth(values: np.ndarray, seconds: float) -> np.ndarray:
    """Moving average over ``seconds`` along the first axis, edges held."""
    n = max(1, int(round(seconds * FPS)))
    if n == 1 or not len(values):
        return values
    padded = np.pad(values, [(n // 2, n - 1 - n // 2)] + [(0, 0)] * (values.ndim - 1),
                    mode="edge")
    kernel = np.ones(n) / n
    if values.ndim == 1:
        return np.convolve(padded, kernel, "valid")
    return np.stack([np.convolve(padded[:, k], kernel, "valid") for k in range(values.shape[1])],
                    axis=1)


def speech_nods(activity: SpeechActivity, rng: np.random.Generator) -> np.ndarray:
    """The speech-driven part, (pitch, yaw, roll) degrees (T, 3)."""
    frames = activity.frames
    out = np.zeros((frames, 3))
    peak = max(float(activity.envelope.max()) if frames else 0.0, 1e-9)
    for s in activity.stresses:
        out[:, 0] += NOD_DEG * activity.envelope[s] / peak * _bump(frames, int(s), NOD_WIDTH_S)
    for end in activity.phrase_ends:
        bump = _bump(frames, int(end), PHRASE_WIDTH_S)
        out[:, 0] += PHRASE_NOD_DEG * bump
        out[:, 1] += PHRASE_TURN_DEG * rng.choice([-1.0, 1.0]) * bump
        out[:, 2] += PHRASE_TILT_DEG * rng.choice([-1.0, 1.0]) * bump
    voiced = activity.pitch > 0
    if voiced.sum() > 1:
        f0 = activity.pitch[voiced]
        z = np.zeros(frames)
        z[voiced] = (f0 - f0.mean()) / max(f0.std(), 1e-6)
        out[:, 0] -= F0_LIFT_DEG * _smooth(z, 0.3)
    return out


def idle_sway(frames: int, rng: np.random.Generator) -> np.ndarray:
    """Band-limited noise (T, 3) degrees with the RMS of :data:`IDLE_RMS_DEG`."""
    if frames < 2:
        return np.zeros((frames, 3))
    freqs = np.fft.rfftfreq(frames, 1 / FPS)
    band = (freqs >= IDLE_BAND_HZ[0]) & (freqs <= IDLE_BAND_HZ[1])
    out = np.zeros((frames, 3))
    for k in range(3):
        spectrum = (rng.standard_normal(len(freqs)) + 1j * rng.standard_normal(len(freqs))) * band
        wave = np.fft.irfft(spectrum, frames)
        rms = np.sqrt(np.mean(wave**2))
        out[:, k] = wave / rms * IDLE_RMS_DEG[k] if rms > 0 else 0.0
    return out


def emotion_posture(emotions: dict[str, np.ndarray], frames: int) -> np.ndarray:
    """Posture (T, 3) degrees from per-frame emotion weights, smoothed over 0.5 s."""
    out = np.zeros((frames, 3))
    for name, angles in POSTURE_DEG.items():
        if name in emotions:
            out += np.clip(np.asarray(emotions[name], np.float64), 0, 1)[:, None] * angles
    return _smooth(out, 0.5)


def head_motion(activity: SpeechActivity, emotions: dict[str, np.ndarray] | None = None,
                seed: int = 0, strength: float = 1.0, speech: float = 1.0, idle: float = 1.0,
                posture: float = 1.0) -> HeadMotion:
    """Head motion for a take with ``activity`` (see the module for the model)."""
    frames = activity.frames
    rng = np.random.default_rng(seed)
    spoken = speech_nods(activity, rng) * speech * strength
    sway = idle_sway(frames, rng) * idle * strength
    pose = emotion_posture(emotions or {}, frames) * posture * strength
    angles = np.clip(spoken + sway + pose, -LIMITS_DEG, LIMITS_DEG)
    r = np.radians(angles)
    neck = euler_to_axis_angle(r[:, 0], r[:, 1], r[:, 2]) if frames else np.zeros((0, 3))
    if strength == 0:
        neck = np.zeros_like(neck)
    return HeadMotion(neck=neck, angles=angles, speech=spoken, idle=sway, posture=pose)


def nod_onset_correlation(motion: HeadMotion, activity: SpeechActivity) -> float:
    """How the speech-driven nods follow the speech: the Pearson correlation, over the take,
    of the downward nod velocity (the frame-to-frame increase of the speech part's pitch,
    negative values set to 0) with the envelope's onsets (:meth:`SpeechActivity.onsets`),
    both smoothed over 120 ms."""
    velocity = np.maximum(np.diff(motion.speech[:, 0], prepend=motion.speech[0, 0]), 0.0)
    a, b = _smooth(velocity, 0.12), _smooth(activity.onsets(), 0.12)
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])
