# SPDX-License-Identifier: GPL-3.0-or-later
"""A character's retarget set-up, kept with the character: everything a take needs to be
applied again without fitting FLAME again, as JSON that is checked before it is trusted.

:meth:`CharacterMapping.from_json` reads only numbers, strings and lists (no ``eval``, no
pickle), refuses NaN and infinities, checks every size against the others and against fixed
limits before any array is made, and says in one sentence what is wrong.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

FORMAT = 1
REGIONS = ("mouth", "jaw", "cheeks", "eyes", "brows")
MAX_JSON_CHARS = 64 * 1024 * 1024
MAX_KEYS = 2048
MAX_POINTS = 20_000
MAX_PAIRS = 2_000
MAX_FLAME_VERTICES = 1_000_000
MAX_NAME = 256


@dataclass
class CharacterMapping:
    """How FLAME motion drives one character (see :func:`server.retarget.setup_character`).

    Sizes: K shape keys, P corresponded points, Q inner-lip pairs."""

    character: str
    key_names: list[str]  # (K,)
    key_ranges: np.ndarray  # (K, 2) slider min, max
    arkit: dict[str, str]  # canonical ARKit name → the character's key name
    # FLAME → character object space: x_char = scale · rotation · x_flame + translation
    scale: float
    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)
    # The corresponded points: on FLAME (vertex combinations) and on the character.
    flame_vertices: np.ndarray  # (P, 3) int
    flame_weights: np.ndarray  # (P, 3)
    positions: np.ndarray  # (P, 3) the character's rest positions there
    key_basis: np.ndarray  # (P, 3, K) what each key does there
    jaw_weights: np.ndarray  # (P,) the character's jaw-bone weights there (0 without a bone)
    point_scale: np.ndarray  # (P,) FLAME metres → character metres for motion there
    point_weight: np.ndarray  # (P,) the solve's weight of each point
    point_region: np.ndarray  # (P,) index into REGIONS
    # The character's inner lips (upper, lower): positions, jaw weights, key basis.
    lip_positions: np.ndarray  # (Q, 2, 3)
    lip_jaw_weights: np.ndarray  # (Q, 2)
    lip_basis: np.ndarray  # (Q, 2, 3, K)
    # FLAME's inner-lip pairs (upper, lower vertex), for the source's own lip gap.
    flame_lips: np.ndarray  # (Q', 2) int
    flame_vertex_count: int
    flame_rest: np.ndarray  # (P, 3) FLAME's template at the points: which FLAME head this is
    flame_mouth_width: float  # metres, FLAME
    mouth_width: float  # metres, the character
    jaw_bone: str | None = None
    jaw_pivot: np.ndarray = field(default_factory=lambda: np.zeros(3))
    jaw_rest: np.ndarray = field(default_factory=lambda: np.eye(3))
    jaw_gain: float = 1.0  # the character's jaw angle per FLAME jaw angle
    landmarks: dict[str, list[float]] = field(default_factory=dict)  # name → (3,) character
    quality: dict[str, float] = field(default_factory=dict)  # region → share after set-up
    notes: list[str] = field(default_factory=list)
    sparsity: float = 0.01  # L1 weight, × the mean diagonal of the data Gram matrix
    smoothness: float = 0.2  # first-difference weight at 25 fps, × the same
    contact: float = 300.0  # the inner-lip contact rows, × the data's weight per point

    @property
    def n_keys(self) -> int:
        return len(self.key_names)

    @property
    def n_points(self) -> int:
        return int(self.positions.shape[0])

    # -- JSON ----------------------------------------------------------------------------------
    def to_json(self) -> str:
        out: dict[str, Any] = {"format": FORMAT}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                value = value.tolist()
            out[f.name] = value
        return json.dumps(out, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> CharacterMapping:
        """The mapping :meth:`to_json` wrote; ``ValueError`` (one sentence) when it is not."""
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                raise _bad("it is not UTF-8 text") from None
        if not isinstance(text, str):
            raise _bad("it is not text")
        if len(text) > MAX_JSON_CHARS:
            raise _bad(f"it is {len(text):,} characters long, more than a mapping can be "
                       f"({MAX_JSON_CHARS:,})")

        def refuse_constant(name: str) -> None:
            raise _bad(f"it holds {name}, which is not a finite number")

        try:
            raw = json.loads(text, parse_constant=refuse_constant)
        except ValueError as exc:
            if str(exc).startswith("The retarget set-up"):
                raise
            raise _bad(f"it is not valid JSON ({exc})") from None
        except RecursionError:
            raise _bad("it is nested too deeply") from None
        if not isinstance(raw, dict):
            raise _bad("it is not a JSON object")
        if raw.get("format") != FORMAT:
            raise _bad(f"its format is {raw.get('format')!r}, this version reads {FORMAT}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - names - {"format"})
        if unknown:
            raise _bad(f"it has the unknown field '{unknown[0]}'")
        return _build(cls, raw)


def _bad(problem: str) -> ValueError:
    return ValueError(f"The retarget set-up cannot be read: {problem}; set the character up "
                      "again.")


def _count(raw: dict, name: str, limit: int) -> int:
    value = raw.get(name)
    if not isinstance(value, list):
        raise _bad(f"'{name}' is not a list")
    if len(value) > limit:
        raise _bad(f"'{name}' has {len(value)} entries, more than {limit}")
    return len(value)


def _array(raw: dict, name: str, shape: tuple[int, ...], integer: bool = False) -> np.ndarray:
    """``raw[name]`` as an array of exactly ``shape``, checked level by level before it is
    converted (a list's length is known before its items are looked at)."""
    value = raw.get(name)

    def check(item: Any, depth: int) -> None:
        if depth == len(shape):
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                raise _bad(f"'{name}' holds {type(item).__name__} where a number belongs")
            if integer and not isinstance(item, int):
                raise _bad(f"'{name}' holds {item!r} where a whole number belongs")
            if not math.isfinite(item):
                raise _bad(f"'{name}' holds a number that is not finite")
            return
        if not isinstance(item, list) or len(item) != shape[depth]:
            got = len(item) if isinstance(item, list) else type(item).__name__
            raise _bad(f"'{name}' should have shape {shape}; at depth {depth} it has {got}")
        for sub in item:
            check(sub, depth + 1)

    check(value, 0)
    return np.array(value, np.int64 if integer else np.float64).reshape(shape)


def _number(raw: dict, name: str, lo: float, hi: float) -> float:
    value = raw.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and lo <= value <= hi):
        raise _bad(f"'{name}' is not a number from {lo} to {hi}")
    return float(value)


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_NAME:
        raise _bad(f"{what} is not a name of at most {MAX_NAME} characters")
    return value


def _build(cls: type[CharacterMapping], raw: dict) -> CharacterMapping:
    k = _count(raw, "key_names", MAX_KEYS)
    p = _count(raw, "positions", MAX_POINTS)
    q = _count(raw, "lip_positions", MAX_PAIRS)
    q_flame = _count(raw, "flame_lips", MAX_PAIRS)
    key_names = [_text(n, "a shape key's name") for n in raw["key_names"]]
    if len(set(key_names)) != k:
        raise _bad("two shape keys have the same name")
    n_flame = raw.get("flame_vertex_count")
    if isinstance(n_flame, bool) or not isinstance(n_flame, int) or not (
            0 < n_flame <= MAX_FLAME_VERTICES):
        raise _bad("'flame_vertex_count' is not a vertex count")
    arkit = raw.get("arkit")
    if not isinstance(arkit, dict) or len(arkit) > 52 or not all(
            isinstance(a, str) and b in key_names for a, b in arkit.items()):
        raise _bad("'arkit' does not name the character's own keys")
    from .arkit import ARKIT_52

    if not set(arkit) <= set(ARKIT_52):
        raise _bad("'arkit' names a key that is not one of ARKit's 52")
    flame_vertices = _array(raw, "flame_vertices", (p, 3), integer=True)
    flame_lips = _array(raw, "flame_lips", (q_flame, 2), integer=True)
    for name, ids in (("flame_vertices", flame_vertices), ("flame_lips", flame_lips)):
        if ids.size and (ids.min() < 0 or ids.max() >= n_flame):
            raise _bad(f"'{name}' names vertices FLAME does not have")
    key_ranges = _array(raw, "key_ranges", (k, 2))
    if (key_ranges[:, 0] > key_ranges[:, 1]).any() or np.abs(key_ranges).max(initial=0) > 1e3:
        raise _bad("'key_ranges' are not (min ≤ max) slider ranges")
    rotation = _array(raw, "rotation", (3, 3))
    if not np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-6):
        raise _bad("'rotation' is not a rotation")
    jaw_rest = _array(raw, "jaw_rest", (3, 3))
    if not np.allclose(jaw_rest.T @ jaw_rest, np.eye(3), atol=1e-4):
        raise _bad("'jaw_rest' is not a rotation")
    region = _array(raw, "point_region", (p,), integer=True)
    if p and (region.min() < 0 or region.max() >= len(REGIONS)):
        raise _bad("'point_region' names a region that does not exist")
    jaw_bone = raw.get("jaw_bone")
    if jaw_bone is not None:
        jaw_bone = _text(jaw_bone, "'jaw_bone'")
    landmarks = raw.get("landmarks")
    if not isinstance(landmarks, dict) or len(landmarks) > 64:
        raise _bad("'landmarks' is not a table of named points")
    landmarks = {_text(n, "a landmark's name"): _array(landmarks, n, (3,)).tolist()
                 for n in landmarks}
    quality = raw.get("quality")
    if not isinstance(quality, dict) or not set(quality) <= set(REGIONS):
        raise _bad("'quality' is not a table of regions")
    quality = {n: _number(quality, n, 0.0, 1.0) for n in quality}
    notes = raw.get("notes")
    if not isinstance(notes, list) or len(notes) > 64 or not all(
            isinstance(n, str) and len(n) <= 1000 for n in notes):
        raise _bad("'notes' is not a list of sentences")
    mapping = cls(
        character=_text(raw.get("character"), "'character'"), key_names=key_names,
        key_ranges=key_ranges, arkit=dict(arkit),
        scale=_number(raw, "scale", 1e-6, 1e6), rotation=rotation,
        translation=_array(raw, "translation", (3,)),
        flame_vertices=flame_vertices, flame_weights=_array(raw, "flame_weights", (p, 3)),
        positions=_array(raw, "positions", (p, 3)),
        key_basis=_array(raw, "key_basis", (p, 3, k)),
        jaw_weights=_array(raw, "jaw_weights", (p,)),
        point_scale=_array(raw, "point_scale", (p,)),
        point_weight=_array(raw, "point_weight", (p,)), point_region=region,
        lip_positions=_array(raw, "lip_positions", (q, 2, 3)),
        lip_jaw_weights=_array(raw, "lip_jaw_weights", (q, 2)),
        lip_basis=_array(raw, "lip_basis", (q, 2, 3, k)), flame_lips=flame_lips,
        flame_vertex_count=n_flame, flame_rest=_array(raw, "flame_rest", (p, 3)),
        flame_mouth_width=_number(raw, "flame_mouth_width", 0.0, 1e3),
        mouth_width=_number(raw, "mouth_width", 0.0, 1e6), jaw_bone=jaw_bone,
        jaw_pivot=_array(raw, "jaw_pivot", (3,)), jaw_rest=jaw_rest,
        jaw_gain=_number(raw, "jaw_gain", 0.0, 10.0), landmarks=landmarks, quality=quality,
        notes=list(notes), sparsity=_number(raw, "sparsity", 0.0, 1e3),
        smoothness=_number(raw, "smoothness", 0.0, 1e6),
        contact=_number(raw, "contact", 0.0, 1e9))
    if (mapping.point_weight < 0).any() or (mapping.point_scale <= 0).any():
        raise _bad("its point weights or scales are not positive")
    return mapping
