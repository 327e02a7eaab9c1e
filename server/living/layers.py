# SPDX-License-Identifier: GPL-3.0-or-later
"""All living layers for one take: the ``eyes``, ``neck`` and ``eyelids`` fields of a take file.

``eyes`` (T, 2, 3): axis-angle rotations of the FLAME eye joints (left, right) in FLAME's frame;
``neck`` (T, 3): axis-angle rotation of the FLAME neck joint; ``eyelids`` (T,): eyelid closure
in [0, 1] (1 = closed), the blinks plus the upper lids following downward gaze. Seeded: the
same audio, condition and seed give the same layers; by default the seed comes from the
audio's content hash (:func:`seed_from_hash`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .blinks import BlinkTrack, blink_track
from .gaze import GazeTrack, gaze_track
from .head import HeadMotion, head_motion
from .speech import SpeechActivity, speech_activity


@dataclass
class LivingLayers:
    """The three take fields and the tracks they came from."""

    eyes: np.ndarray  # (T, 2, 3)
    neck: np.ndarray  # (T, 3)
    eyelids: np.ndarray  # (T,)
    activity: SpeechActivity
    blinks: BlinkTrack
    gaze: GazeTrack
    head: HeadMotion

    def fields(self) -> dict[str, np.ndarray]:
        return {"eyes": self.eyes, "neck": self.neck, "eyelids": self.eyelids}


def seed_from_hash(content_hash: str) -> int:
    """A 32-bit seed from a hex content hash (:meth:`server.audio.AudioClip.content_hash`)."""
    return int(content_hash[:8], 16)


def emotion_weights(condition: np.ndarray, emotions: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-frame weights {name: (T,)} from a take's condition (T, C) whose first columns are
    the emotions' (the one-hot layout of :mod:`server.condition`)."""
    condition = np.asarray(condition, np.float64)
    return {name: condition[:, i] for i, name in enumerate(emotions)}


def living_layers(samples: np.ndarray, frames: int,
                  emotions: dict[str, np.ndarray] | None = None, seed: int = 0, **controls: Any
                  ) -> LivingLayers:
    """Blinks, gaze and head motion for a take of ``frames`` frames at 25 fps whose audio is
    ``samples`` (16 kHz mono); ``controls`` as for :func:`layers_from_activity`."""
    return layers_from_activity(speech_activity(samples, frames), emotions, seed, **controls)


def layers_from_activity(activity: SpeechActivity,
                         emotions: dict[str, np.ndarray] | None = None, seed: int = 0, *,
                         blink_rate: float = 1.0, blink_amount: float = 1.0,
                         gaze_target: np.ndarray | None = None, aversion: float = 1.0,
                         head_strength: float = 1.0) -> LivingLayers:
    """The layers from a take's speech activity (what a take stores, so that they can be
    recomputed with other controls without the audio). Each layer draws from its own seed
    derived from ``seed``; ``gaze_target`` is the look-at direction in FLAME's frame ((3,) or
    per frame (T, 3); default straight ahead)."""
    seeds = np.random.SeedSequence(seed).generate_state(3)
    blinks = blink_track(activity, emotions, int(seeds[0]), rate=blink_rate,
                         amount=blink_amount)
    gaze = gaze_track(activity, int(seeds[1]), target=gaze_target, aversion=aversion)
    head = head_motion(activity, emotions, int(seeds[2]), strength=head_strength)
    eyelids = np.clip(blinks.closure + gaze.lid_follow, 0, 1)
    return LivingLayers(eyes=gaze.eyes, neck=head.neck, eyelids=eyelids, activity=activity,
                        blinks=blinks, gaze=gaze, head=head)
