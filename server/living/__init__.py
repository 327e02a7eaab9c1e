# SPDX-License-Identifier: GPL-3.0-or-later
"""The living face: blinks, gaze and head motion added to a take, computed with NumPy alone.

EMOTE animates the mouth, the jaw and the expression; these layers give the rest of a face its
life. Each layer is a plain function of the take's speech and condition and a seed, so a layer
can be recomputed with other controls without running the network again:

- :mod:`.speech`: the speech activity of the audio (energy envelope, pauses, phrase ends,
  stressed syllables, pitch), the one input all layers share;
- :mod:`.blinks`: blink timing and eyelid closure (T,) in [0, 1];
- :mod:`.eyelids`: the eyelid-closing direction in a FLAME file's expression space;
- :mod:`.gaze`: fixations and saccades as axis-angle rotations of the FLAME eye joints;
- :mod:`.head`: speech-driven and idle head motion on the FLAME neck joint;
- :mod:`.closure`: the p/b/m closures found in the audio and the lips shut there;
- :mod:`.layers`: all of them for one take, as the ``eyes``, ``neck`` and ``eyelids`` fields.

No torch and no scipy: the Blender extension runs this code in Blender's Python.
"""

from .blinks import Blink, BlinkTrack, blink_track
from .closure import LipClosure, close_lips, closure_weights, lip_closure
from .eyelids import EyelidDirection, EyelidVertices, eyelid_direction, find_eyelids
from .gaze import GazeTrack, gaze_track
from .head import HeadMotion, head_motion
from .layers import (
    LivingLayers,
    emotion_weights,
    layers_from_activity,
    living_layers,
    seed_from_hash,
)
from .speech import SpeechActivity, speech_activity

__all__ = [
    "Blink", "BlinkTrack", "EyelidDirection", "LipClosure", "close_lips", "closure_weights",
    "lip_closure", "EyelidVertices", "GazeTrack", "HeadMotion",
    "LivingLayers", "SpeechActivity", "blink_track", "emotion_weights", "eyelid_direction",
    "find_eyelids", "gaze_track", "head_motion", "layers_from_activity", "living_layers",
    "seed_from_hash", "speech_activity",
]
