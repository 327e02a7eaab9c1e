# SPDX-License-Identifier: GPL-3.0-or-later
"""A take's ARKit weights through a character mapping (:mod:`server.retarget`): the
character's own ARKit-named keys, as the retarget solved them, become the Live Link columns.

A mapping set up for an ARKit character (``mapping.arkit``: canonical ARKit name → the
character's key) gives each mapped coefficient its key's weight; ARKit names the character
lacks are 0. The CSV always carries the jaw: where the retarget moves the character's jaw
bone, ``jawOpen`` is that bone's rotation about x / :data:`~server.export.flame_arkit.
JAW_OPEN_REF` (as the approximation measures FLAME's jaw) added to the jawOpen key's own
weight (an engine's ARKit rig opens the jaw from the JawOpen curve); without a bone it is the
key's weight, and without the key either, the take's jaw. The living layers are not FLAME
expression, so the retarget does not see them: blinks combine with the eyeBlink keys as
``1 − (1 − key)·(1 − eyelids)`` and the gaze gives eyeLook* as in the approximation.
A mapping onto keys none of which are ARKit's (visemes, a studio's own names) cannot fill a
Live Link CSV and is refused with a sentence.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .flame_arkit import JAW_OPEN_REF, SIDES, gaze_weights

if TYPE_CHECKING:
    from ..retarget import CharacterMapping, Retargeted


def read_arkit_mapping(path: str | Path) -> CharacterMapping:
    """The character mapping in ``path`` (JSON written by ``CharacterMapping.to_json``),
    refused with a sentence when it cannot be read or maps onto no ARKit keys."""
    from ..retarget import CharacterMapping
    from ..retarget.mapping import MAX_JSON_CHARS

    path = Path(path)
    try:
        if path.exists() and not path.is_file():
            raise ValueError(f"The character mapping '{path}' is not a file.")
        with path.open("rb") as f:  # a mapping is JSON text of bounded size: read no more
            text = f.read(MAX_JSON_CHARS + 1)
        if len(text) > MAX_JSON_CHARS:
            raise ValueError(f"The character mapping '{path}' is larger than "
                             f"{MAX_JSON_CHARS // 2**20} MB; it is not one this tool wrote.")
    except FileNotFoundError:
        raise ValueError(f"The character mapping '{path}' does not exist.") from None
    except OSError as exc:
        raise ValueError(f"Cannot read the character mapping '{path}' "
                         f"({exc.strerror or exc}).") from None
    try:
        mapping = CharacterMapping.from_json(text)
    except ValueError as exc:
        raise ValueError(f"'{path}': {exc}") from None
    if not mapping.arkit:
        shown = ", ".join(mapping.key_names[:5]) + (" …" if mapping.n_keys > 5 else "")
        raise ValueError(f"The character mapping '{path}' drives {mapping.n_keys} keys "
                         f"({shown}), none of them ARKit blendshapes; a Live Link CSV carries "
                         "ARKit's 52 coefficients: leave out --character for the FLAME → "
                         "ARKit approximation, or set up a character with ARKit keys.")
    return mapping


def character_arkit_weights(mapping: CharacterMapping, result: Retargeted,
                            take_jaw: np.ndarray, eyelids: np.ndarray | None = None,
                            eyes: np.ndarray | None = None
                            ) -> tuple[dict[str, np.ndarray], list[str]]:
    """Canonical ARKit name → (T,) from a retarget ``result`` of ``mapping``, with the
    take's ``eyelids`` (T,) and ``eyes`` (T, 2, 3) layers when it has them (see the module's
    description), and notes on what the CSV leaves out."""
    column = {name: i for i, name in enumerate(mapping.key_names)}
    weights = {arkit: np.asarray(result.weights[:, column[key]], np.float64)
               for arkit, key in mapping.arkit.items()}
    notes = []
    if result.jaw is not None:
        bone = np.clip(result.jaw[:, 0] / JAW_OPEN_REF, 0.0, 1.0)
        weights["jawOpen"] = np.clip(weights.get("jawOpen", 0.0) + bone, 0.0, 1.0)
    elif "jawOpen" not in weights:
        weights["jawOpen"] = np.clip(np.asarray(take_jaw, np.float64)[:, 0] / JAW_OPEN_REF,
                                     0.0, 1.0)
        notes.append("the character has neither a jawOpen key nor a jaw bone; jawOpen is the "
                     f"take's jaw rotation / {JAW_OPEN_REF} rad")
    if eyelids is not None:
        closure = np.clip(np.asarray(eyelids, np.float64), 0.0, 1.0)
        for side in SIDES:
            key = weights.get(f"eyeBlink{side}", 0.0)
            weights[f"eyeBlink{side}"] = 1 - (1 - np.clip(key, 0.0, 1.0)) * (1 - closure)
    if eyes is not None:
        weights.update(gaze_weights(np.asarray(eyes, np.float64))[0])
    others = mapping.n_keys - len(mapping.arkit)
    if others:
        notes.append(f"{others} of the character's {mapping.n_keys} keys are not ARKit "
                     "blendshapes and are not in the CSV")
    missing = 52 - len(weights)
    if missing:
        notes.append(f"{missing} ARKit blendshapes the character lacks are written as 0")
    return weights, notes
