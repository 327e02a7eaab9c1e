# SPDX-License-Identifier: GPL-3.0-or-later
"""The 52 ARKit blendshape names and how characters spell them.

Apple's ARKit face tracking (``ARFaceAnchor.BlendShapeLocation``) defines 52 coefficients;
most ARKit-ready characters (Live Link Face, Ready Player Me, Character Creator, VRoid exports,
studio rigs) name their shape keys after them, but seldom exactly: ``EyeBlink_L``,
``eye_blink_left``, ``blendShape1.eyeBlinkLeft``, ``ARKit_jawOpen``, ``A38_Mouth_Smile_Left``.
:func:`canonical_arkit_name` reads such a name back to Apple's spelling.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Apple's order (ARFaceAnchor.BlendShapeLocation, as Live Link Face streams them). "Left" is the
# subject's left.
ARKIT_52 = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft",
    "eyeSquintLeft", "eyeWideLeft",
    "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
    "eyeSquintRight", "eyeWideRight",
    "jawForward", "jawLeft", "jawRight", "jawOpen",
    "mouthClose", "mouthFunnel", "mouthPucker", "mouthLeft", "mouthRight",
    "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthUpperUpLeft", "mouthUpperUpRight",
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight",
    "noseSneerLeft", "noseSneerRight",
    "tongueOut",
)

_BY_FOLDED = {name.lower(): name for name in ARKIT_52}
# Prefixes exporters put before the name (after case and separators are folded away):
# "ARKit_", "bs_", "BS_", "blendShape1.", "CC_Base_", "A38_" (Character Creator's numbering),
# "Face_", "Head_", "shapes.", "morph_", "facs_".
_PREFIX = re.compile(r"^(arkit|blendshapes?\d*|bs|cc|base|a\d{1,2}|facs|face|head|shapes?|"
                     r"keys?|morphs?|target|mh|rpm)")
_SEPARATORS = re.compile(r"[\s_.\-:|/]+")


def _fold(text: str) -> str:
    return _SEPARATORS.sub("", text).lower()


def _spellings(tail: str) -> list[str]:
    """Folded spellings of ``tail``: as written, with a short side suffix (``_L``, ``.R``,
    ``mouthSmileL``) or a leading side (``L_eyeBlink``, ``Left_eyeBlink``) written out as
    ``left``/``right`` at the end."""
    folded = _fold(tail)
    out = [folded]
    side = re.search(r"(?:[\s_.\-]([LlRr])|(?<=[a-z])([LR]))$", tail)
    if side:
        word = "left" if (side.group(1) or side.group(2)).lower() == "l" else "right"
        out.append(_fold(tail[: side.start()]) + word)
    lead = re.match(r"^(left|right|[LlRr])(?:[\s_.\-]+|(?=[A-Z]))", tail, re.IGNORECASE)
    if lead:
        word = "left" if lead.group(1).lower().startswith("l") else "right"
        out.append(_fold(tail[lead.end():]) + word)
    return out


def canonical_arkit_name(name: str) -> str | None:
    """Apple's spelling of the ARKit blendshape ``name`` stands for, or None.

    Case and separators (``_ . - : |`` and spaces) do not matter; a namespace before the last
    ``.``/``:``/``|`` (``blendShape1.eyeBlinkLeft``), exporter prefixes (``ARKit_``, ``bs_``,
    ``CC_Base_``, ``A38_``) and side marks (``_L``, ``.R``, ``mouthSmileL``, ``L_``) are
    understood."""
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        return None
    raw = name.strip()
    tails = [raw] + [raw.rsplit(mark, 1)[1] for mark in ".:|/" if mark in raw]
    for tail in tails:
        for spelling in _spellings(tail):
            while spelling:
                if spelling in _BY_FOLDED:
                    return _BY_FOLDED[spelling]
                prefix = _PREFIX.match(spelling)
                if not prefix or prefix.end() >= len(spelling):
                    break
                spelling = spelling[prefix.end():]
    return None


def arkit_keys(names: Iterable[str]) -> dict[str, str]:
    """The ARKit shape keys among ``names``: canonical name → the character's own name. When
    two keys read as the same ARKit name, the one spelt exactly wins, else the first."""
    found: dict[str, str] = {}
    for name in names:
        canonical = canonical_arkit_name(name)
        if canonical is None:
            continue
        if canonical not in found or name == canonical:
            found[canonical] = name
    return found
