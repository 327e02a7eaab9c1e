# SPDX-License-Identifier: GPL-3.0-or-later
"""Blinks: when the eyelids close, for how long, and how far, at 25 fps.

The model and its numbers:

- **Rate.** Spontaneous blinking at rest is about 17 blinks/min and rises to about 26/min in
  conversation (Bentivoglio et al. 1997, *Analysis of blink rate patterns in normal subjects*,
  Movement Disorders 12(6):1028-1034: 17/min at rest, 26/min in conversation, 4.5/min reading).
  The hazard uses 26/min while speaking and 17/min in pauses; over a take the rate lies in
  [17, 26] blinks/min × the emotion factor × ``rate``.
- **Where.** Blinks cluster at breaks in speech: listeners and speakers blink at phrase ends
  and pauses (Nakano et al. 2009, *Synchronization of spontaneous eyeblinks while viewing video
  stories*, Proc. R. Soc. B 276:3635-3644; Ponder & Kennedy 1927, Q. J. Exp. Physiol.
  18:89-110, blinks at natural breaks). The hazard is tripled (× ``1 + PAUSE_BOOST``) for
  400 ms after each phrase end and then rescaled so the mean rate is kept.
- **Refractory.** After a blink ends no new one starts for 300 ms (blinks are not seen closer
  than a few hundred ms except as doublets); the hazard is raised by the dead-time correction
  λ = r / (1 − r·τ) so the observed rate is still r.
- **Doubles.** 7 % of blinks are followed by a second one 80-200 ms after the first reopens
  (blink doublets and bursts make up a few to ten percent of spontaneous blinks in the
  literature reviewed by Doughty 2001, *Consideration of three types of spontaneous eyeblink
  activity in normal humans*, Optom. Vis. Sci. 78(10):712-725).
- **Duration.** Lognormal, median 230 ms, σ = 0.25 (log), clipped to 120-400 ms: a full
  spontaneous blink lasts about 100-400 ms (Caffier, Erdmann & Ullsperger 2003, *Experimental
  evaluation of eye-blink parameters as a drowsiness measure*, Eur. J. Appl. Physiol.
  89:319-325: about 200-260 ms in alert subjects). The lid closes faster than it opens
  (Evinger, Manning & Sibony 1991, *Eyelid movements*, Invest. Ophthalmol. Vis. Sci.
  32:387-400): closing takes 35 % of the blink, opening 65 %. At 25 fps a blink spans its start
  frame, at least one closing frame to a peak frame of full closure, and at least two opening
  frames.
- **Emotion** (the product's settings, in the directions the brief of each emotion gives;
  not measured values): Surprise blinks at 0.55× and Fear at 0.7× the rate with widened eyes
  (``widen`` 0.6 and 0.4: the upper-lid raise, FACS AU5, of Ekman & Friesen 1978); Sad blinks
  last 1.35× longer (up to 540 ms) and the lids rest 15 % closed (heavier lids). Weights are a
  take's per-frame emotion weights clipped to [0, 1]; factors mix linearly.

``amount`` scales the closure of the blinks (1 = lids meet); ``rate`` scales the rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .speech import FPS, SpeechActivity

REST_RATE_PER_MIN = 17.0
SPEAKING_RATE_PER_MIN = 26.0
PAUSE_BOOST = 2.0  # hazard × 3 just after a phrase end
PAUSE_WINDOW_S = 0.4
REFRACTORY_S = 0.3
DOUBLE_PROBABILITY = 0.07
DOUBLE_GAP_S = (0.08, 0.2)
DURATION_MEDIAN_S = 0.23
DURATION_SIGMA = 0.25
DURATION_RANGE_S = (0.12, 0.4)
CLOSING_SHARE = 0.35
# Per emotion: (rate factor, duration factor, resting lid closure, widening).
EMOTION_BLINKS = {
    "Surprise": (0.55, 1.0, 0.0, 0.6),
    "Fear": (0.7, 1.0, 0.0, 0.4),
    "Sad": (1.0, 1.35, 0.15, 0.0),
}


@dataclass(frozen=True)
class Blink:
    """One blink, in frames at 25 fps: the lids start closing at ``start``, are fully closed at
    ``peak`` and are open again at ``end``. ``double`` marks the second blink of a doublet."""

    start: int
    peak: int
    end: int
    double: bool = False

    @property
    def seconds(self) -> float:
        return (self.end - self.start) / FPS


@dataclass
class BlinkTrack:
    """Eyelid closure (T,) in [0, 1] (1 = closed), the blinks in it, and the widening (T,) in
    [0, 1] of the upper lids that Surprise and Fear bring (not part of the closure)."""

    closure: np.ndarray
    events: list[Blink] = field(default_factory=list)
    widen: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def rate_per_minute(self) -> float:
        minutes = len(self.closure) / FPS / 60
        return len(self.events) / minutes if minutes else 0.0


def _emotion_mix(weights: dict[str, np.ndarray], frames: int, column: int, neutral: float
                 ) -> np.ndarray:
    """Linear mix over the emotions of one column of :data:`EMOTION_BLINKS` (T,)."""
    mix = np.full(frames, neutral)
    for name, values in EMOTION_BLINKS.items():
        if name in weights:
            mix += np.clip(weights[name], 0, 1) * (values[column] - neutral)
    return mix


def blink_track(activity: SpeechActivity, emotions: dict[str, np.ndarray] | None = None,
                seed: int = 0, rate: float = 1.0, amount: float = 1.0) -> BlinkTrack:
    """Blinks for a take with ``activity`` (its frames set the length).

    ``emotions`` maps emotion names (those of :data:`server.protocol.EMOTIONS`) to per-frame
    weights (T,); missing names weigh 0. The same inputs and ``seed`` give the same blinks.
    """
    frames = activity.frames
    emotions = emotions or {}
    rng = np.random.default_rng(seed)
    dt = 1.0 / FPS
    base = np.where(activity.speaking, SPEAKING_RATE_PER_MIN, REST_RATE_PER_MIN) / 60.0
    base = base * _emotion_mix(emotions, frames, 0, 1.0) * max(rate, 0.0)
    duration_factor = _emotion_mix(emotions, frames, 1, 1.0)
    droop = np.clip(_emotion_mix(emotions, frames, 2, 0.0), 0, 1)
    widen = np.clip(_emotion_mix(emotions, frames, 3, 0.0), 0, 1)

    shape = np.ones(frames)
    window = int(round(PAUSE_WINDOW_S * FPS))
    for end in activity.phrase_ends:
        shape[end: end + window] += PAUSE_BOOST
    if frames:
        shape /= shape.mean()
    target = base * shape / (1 + DOUBLE_PROBABILITY)  # doublets add their second blinks
    closure = np.zeros(frames)
    events: list[Blink] = []
    free_from = 0.0  # time (s) when the refractory period after the last blink is over
    t = 0
    while t < frames:
        now = t * dt
        if now < free_from:
            t += 1
            continue
        r = target[t]
        duration = float(np.clip(DURATION_MEDIAN_S * np.exp(DURATION_SIGMA * rng.standard_normal()),
                                 *DURATION_RANGE_S)) * duration_factor[t]
        dead = duration + REFRACTORY_S
        hazard = r / max(1.0 - r * dead, 0.05)  # dead-time correction keeps the rate r
        if rng.random() >= 1.0 - np.exp(-hazard * dt):
            t += 1
            continue
        blink = _place(t, duration)
        events.append(blink)
        end_time = blink.end * dt
        if rng.random() < DOUBLE_PROBABILITY:
            gap = rng.uniform(*DOUBLE_GAP_S)
            start = blink.end + max(1, int(round(gap * FPS)))
            second = _place(start, duration * rng.uniform(0.8, 1.0), double=True)
            if second.end < frames + 3:
                events.append(second)
                end_time = second.end * dt
        free_from = end_time + REFRACTORY_S
        t = int(np.ceil(free_from * FPS))
    for blink in events:
        _draw(closure, blink)
    closure = np.clip(np.maximum(closure * np.clip(amount, 0, 1), droop), 0, 1)
    events = [b for b in events if b.start < frames]
    return BlinkTrack(closure=closure, events=events, widen=widen)


def _place(start: int, duration: float, double: bool = False) -> Blink:
    """The frames of a blink of ``duration`` seconds starting at frame ``start``."""
    closing = max(1, int(round(duration * CLOSING_SHARE * FPS)))
    opening = max(2, int(round(duration * (1 - CLOSING_SHARE) * FPS)))
    return Blink(start=start, peak=start + closing, end=start + closing + opening, double=double)


def _draw(closure: np.ndarray, blink: Blink) -> None:
    """Add a blink's closure curve: an ease-in close to 1 at the peak, an ease-out open."""
    frames = len(closure)
    for t in range(blink.start, min(blink.end + 1, frames)):
        if t <= blink.peak:
            u = (t - blink.start) / (blink.peak - blink.start)
            value = np.sin(0.5 * np.pi * u) ** 2
        else:
            u = (t - blink.peak) / (blink.end - blink.peak)
            value = np.cos(0.5 * np.pi * u) ** 2
        closure[t] = max(closure[t], value)
