# SPDX-License-Identifier: GPL-3.0-or-later
"""Gaze: fixations and saccades of both eyes, as FLAME eye-joint rotations at 25 fps.

The model and its numbers:

- **Main sequence.** A saccade of amplitude A degrees lasts D = 2.2 ms/deg · A + 21 ms
  (Carpenter 1988, *Movements of the Eyes*, 2nd ed., Pion: D ≈ 2.2 A + 21 ms; Bahill, Clark &
  Stark 1975, *The main sequence, a tool for studying human eye movements*, Math. Biosci.
  24:191-204). Its position follows a minimum-jerk profile, whose peak velocity is 1.875 A / D;
  peak velocity saturates near 500 deg/s (Bahill, Clark & Stark 1975), so D is lengthened where
  the profile would exceed 500 deg/s.
- **Amplitudes.** Most natural saccades are 15 degrees or less (Bahill, Adler & Stark 1975,
  *Most naturally occurring human saccades have magnitudes of 15 degrees or less*, Invest.
  Ophthalmol. 14:468-469). While looking at the listener the eyes scan the face: each new
  fixation lands within 3 degrees of the look-at direction (uniform over that disc). Gaze
  aversions land 6-12 degrees from it (uniform), mostly sideways or down (direction within
  ±40 degrees of left, right or straight down).
- **Fixation durations.** Lognormal, median 380 ms, σ = 0.55 (log), clipped to 0.15-3 s: about
  190-770 ms between the 10th and 90th percentiles with a long tail (fixations of 200-400 ms in
  scene viewing, longer on faces: Rayner 1998, *Eye movements in reading and information
  processing: 20 years of research*, Psychol. Bull. 124:372-422; Henderson 2003, Trends Cogn.
  Sci. 7:498-504).
- **Aversion while speaking.** Speakers look at their listener less than listeners do (about
  40 % against 75 % of the time: Argyle & Cook 1976, *Gaze and Mutual Gaze*, Cambridge UP) and
  look back at the end of a phrase (Kendon 1967, *Some functions of gaze-direction in social
  interaction*, Acta Psychol. 26:22-63). Each new fixation averts with probability 0.6 while
  speaking and 0.2 in pauses; at each phrase end an averted gaze returns to the listener.
- **Limits** (this model's, inside the human oculomotor range of about ±45 degrees): yaw
  within ±30 degrees, pitch from 25 degrees down to 20 degrees up, for the look-at direction
  and every fixation. Both eyes rotate together (a distant target: parallel gaze).
- **Lid follow.** The upper lid follows vertical gaze (Becker & Fuchs 1988, *Lid-eye
  coordination during vertical gaze changes in man and monkey*, J. Neurophysiol. 60:1227-1252):
  looking down by p degrees adds 0.4 · p / 25 to the eyelid closure (0.4 at 25 degrees down);
  looking up adds none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .rotations import matrix_to_axis_angle, rotation_x, rotation_y
from .speech import FPS, SpeechActivity

MS_PER_DEG = 2.2
BASE_MS = 21.0
PEAK_VELOCITY_DEG_S = 500.0
MIN_JERK_PEAK = 1.875  # peak velocity of a minimum-jerk move, × amplitude / duration
SCAN_RADIUS_DEG = 3.0
AVERSION_DEG = (6.0, 12.0)
FIXATION_MEDIAN_S = 0.38
FIXATION_SIGMA = 0.55
FIXATION_RANGE_S = (0.15, 3.0)
AVERT_SPEAKING = 0.6
AVERT_PAUSE = 0.2
YAW_LIMIT_DEG = 30.0
PITCH_LIMIT_DEG = (-25.0, 20.0)  # down, up
LID_FOLLOW = 0.4  # closure added at 25 degrees down


@dataclass(frozen=True)
class Saccade:
    """One saccade: start time (s), duration (s), amplitude (deg), peak velocity (deg/s)."""

    start: float
    duration: float
    amplitude: float
    peak_velocity: float


@dataclass
class GazeTrack:
    """Per frame: gaze yaw and pitch (degrees, + = subject's left / up), the eye joints'
    axis-angle rotations (T, 2, 3: left, right), the lid follow (T,) to add to the eyelid
    closure, the saccades and the fixation durations (s) between them."""

    yaw: np.ndarray
    pitch: np.ndarray
    eyes: np.ndarray
    lid_follow: np.ndarray
    saccades: list[Saccade] = field(default_factory=list)
    fixations: np.ndarray = field(default_factory=lambda: np.zeros(0))


def saccade_duration(amplitude: float) -> float:
    """Seconds for a saccade of ``amplitude`` degrees: the main sequence, lengthened so the
    minimum-jerk peak velocity stays at or below 500 deg/s."""
    return max((MS_PER_DEG * amplitude + BASE_MS) / 1000,
               MIN_JERK_PEAK * amplitude / PEAK_VELOCITY_DEG_S)


def direction_angles(direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Yaw and pitch (degrees) of gaze directions (..., 3) in FLAME's frame (+z = ahead)."""
    d = np.asarray(direction, np.float64)
    d = d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-12)
    yaw = np.degrees(np.arctan2(d[..., 0], d[..., 2]))
    pitch = np.degrees(np.arcsin(np.clip(d[..., 1], -1, 1)))
    return yaw, pitch


def _clamp(yaw: np.ndarray, pitch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (np.clip(yaw, -YAW_LIMIT_DEG, YAW_LIMIT_DEG),
            np.clip(pitch, PITCH_LIMIT_DEG[0], PITCH_LIMIT_DEG[1]))


def gaze_track(activity: SpeechActivity, seed: int = 0, target: np.ndarray | None = None,
               aversion: float = 1.0) -> GazeTrack:
    """Gaze for a take with ``activity``. ``target``: the look-at direction in FLAME's frame
    from the eyes, (3,) or per frame (T, 3); default straight ahead (+z, the camera).
    ``aversion`` scales the aversion probabilities (0: always at the target)."""
    frames = activity.frames
    rng = np.random.default_rng(seed)
    if target is None:
        target = np.array([0.0, 0.0, 1.0])
    target = np.broadcast_to(np.asarray(target, np.float64), (frames, 3)) if frames else \
        np.zeros((0, 3))
    look_yaw, look_pitch = _clamp(*direction_angles(target)) if frames else (np.zeros(0),) * 2
    duration_s = frames / FPS
    phrase_ends = np.sort(activity.phrase_ends / FPS)

    # Offsets from the look-at direction, as a piecewise path: (time, offset) knots.
    times, offsets, moves = [0.0], [np.zeros(2)], []
    fixations = []
    position, averted, now = np.zeros(2), False, 0.0
    while now < duration_s:
        fixation = float(np.clip(FIXATION_MEDIAN_S * np.exp(FIXATION_SIGMA * rng.standard_normal()),
                                 *FIXATION_RANGE_S))
        following = np.searchsorted(phrase_ends, now + 1e-9)
        next_end = phrase_ends[following] if following < len(phrase_ends) else None
        returning = averted and next_end is not None and next_end < now + fixation
        start = next_end if returning else now + fixation
        fixations.append(start - now)
        frame = min(int(start * FPS), max(frames - 1, 0))
        speaking = bool(activity.speaking[frame]) if frames else False
        p_avert = (AVERT_SPEAKING if speaking else AVERT_PAUSE) * aversion
        if returning or rng.random() >= p_avert:
            radius = SCAN_RADIUS_DEG * np.sqrt(rng.random())
            angle = rng.uniform(0, 2 * np.pi)
            new = radius * np.array([np.cos(angle), np.sin(angle)])
            averted = False
        else:
            side = rng.choice([0.0, np.pi, -0.5 * np.pi])  # left, right, down
            angle = side + np.radians(rng.uniform(-40, 40))
            new = rng.uniform(*AVERSION_DEG) * np.array([np.cos(angle), np.sin(angle)])
            averted = True
        amplitude = float(np.linalg.norm(new - position))
        length = saccade_duration(amplitude)
        moves.append(Saccade(start=start, duration=length, amplitude=amplitude,
                             peak_velocity=MIN_JERK_PEAK * amplitude / length))
        times += [start, start + length]
        offsets += [position, new]
        position, now = new, start + length
    t = np.arange(frames) / FPS
    knots = np.array(times)
    path = np.array(offsets)
    offset = np.zeros((frames, 2))
    index = np.clip(np.searchsorted(knots, t, side="right") - 1, 0, len(knots) - 1)
    for f in range(frames):
        i = index[f]
        if i + 1 < len(knots) and i % 2 == 1:  # inside a saccade: minimum-jerk blend
            u = (t[f] - knots[i]) / max(knots[i + 1] - knots[i], 1e-9)
            s = 10 * u**3 - 15 * u**4 + 6 * u**5
            offset[f] = path[i] + s * (path[i + 1] - path[i])
        else:
            offset[f] = path[i]
    yaw, pitch = _clamp(look_yaw + offset[:, 0], look_pitch + offset[:, 1])
    rotation = rotation_y(np.radians(yaw)) @ rotation_x(-np.radians(pitch))
    eye = matrix_to_axis_angle(rotation) if frames else np.zeros((0, 3))
    eyes = np.stack([eye, eye], axis=1)
    lid_follow = LID_FOLLOW * np.clip(-pitch, 0, -PITCH_LIMIT_DEG[0]) / -PITCH_LIMIT_DEG[0]
    moves = [m for m in moves if m.start < duration_s]
    return GazeTrack(yaw=yaw, pitch=pitch, eyes=eyes, lid_follow=lid_follow, saccades=moves,
                     fixations=np.array(fixations[: len(moves)]))
