# SPDX-License-Identifier: GPL-3.0-or-later
"""Lip closure for p, b and m: find the bilabial closures in the audio and shut the lips there.

A speech model that regresses the mouth from audio smooths over the short closures of p, b
and m (40-120 ms), and a mouth that never shuts on "apple pie" reads as wrong at once. This
layer works with any model and any FLAME file, in two parts.

**Where: the detector.** Each 25 fps frame (640 samples at 16 kHz) is cut into four 10 ms
sub-frames, each analysed over a 25 ms Hann window (512-point FFT) into ``MEL_BANDS`` log
mel-band energies (HTK mel scale, 60-7600 Hz) in dB relative to the take's loud speech (the
95th percentile of the sub-frames' total level, or the level of audio at -80 dBFS when the
take is quieter: silence stays silence; floored at -80 dB, divided by 20), so the level of a
recording does not matter. The detector sees the frame with ``CONTEXT`` frames on
each side (edges padded with silence) and is a one-hidden-layer perceptron:

    p_t = σ(w₂ · tanh(W₁ · (x_t − μ) / s + b₁) + b₂)

the probability that frame t lies in a p, b or m. Its weights (``closure_detector.npz``
beside this file) are trained by :mod:`.train_closure` on the training split of the demo's
synthetic corpus (never the held-out voice or sentences). :func:`closure_weights` turns the
probabilities into the closure track: 1 where ``p_t`` reaches the detector's threshold,
rising smoothly from half the threshold (``smoothstep``), with one-frame ramps of
``RAMP`` × the neighbour's weight in and out. ``RAMP`` = 0.2 was chosen on the corpus'
validation split (training voices) with the demo model on the demo head: of 0.45, 0.3, 0.2
and 0 it is the largest that shuts under 5 % of the open-vowel middle frames (7.2 %, 5.6 %,
4.8 %, 3.9 %; p/b/m middle frames shut: 90 %, 89 %, 89 %, 89 %).

**How: the closing operator.** :func:`lip_closure` finds the inner-lip (lip-margin) vertex
pairs of a FLAME file from its geometry (see :func:`find_lips`): lower-lip vertices (skinned
mostly to the jaw, joint 2) whose nearest upper-lip vertex (skinned mostly elsewhere) lies
within ``MAX_GAP`` × the eye distance but more than ``MIN_RINGS`` mesh edges away (across the
mouth opening, not across the jaw's skinning seam on the cheek), each upper vertex keeping its
nearest lower one, and per sideways slice the pairs at the front of the mouth. With the jaw
at rest (FLAME's closed mouth) the offset of pair i is ``g_i(e) = (u_i − l_i) + (U_i − L_i)·e``,
linear in the expression e; closing brings every pair back to its rest offset with the
smallest change Δe:

    Δe = argmin ‖A·(e + Δe)‖² + w_upper·‖B_upper·Δe‖² + w_face·‖B·Δe‖² + α·‖Δe‖²
       = −(G + P)⁻¹ G · e,   G = AᵀA,   P = w_upper·B_upperᵀB_upper + w_face·BᵀB + α·I

(A the stacked pair rows U − L of the expression basis, B_upper the rows of the upper face
and eyes, B all rows; w_upper = 10⁴ × pairs / upper vertices so the upper face stays still,
w_face = 10⁻² × pairs / vertices so among the changes that close the lips the smallest mesh
change wins, α = 10⁻⁶ × the mean of diag(G)). :func:`close_lips` applies it to a whole take
with one factorisation: with s_t = clip(weight_t × amount, 0, 1), ``jaw ← (1 − s)·jaw`` and
``e ← e + s·Δe``; at s = 1 the lips are back at their rest offset exactly (to the ridge).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..flame import SHAPE_SPACE_DIM, FlameData

SAMPLE_RATE = 16_000
FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS
SUBFRAMES = 4  # 10 ms hops per 40 ms frame
WINDOW = 400  # 25 ms
FFT_SIZE = 512
MEL_BANDS = 24
MEL_RANGE_HZ = (60.0, 7600.0)
FLOOR_DB = -80.0
SILENCE_DB = -37.0  # total mel level of a 25 ms window of a sine at -80 dBFS
CONTEXT = 2  # frames on each side
FEATURES = (2 * CONTEXT + 1) * SUBFRAMES * MEL_BANDS
HOLD = 0  # frames held fully shut on each side of a detection
RAMP = 0.2  # see the module's description
DETECTOR_FILE = Path(__file__).resolve().parent / "closure_detector.npz"
DETECTOR_FORMAT = 1

LEFT_EYE, RIGHT_EYE, JAW = 3, 4, 2
JAW_SIDE = 0.5  # jaw skinning weight above which a vertex moves with the lower lip
MAX_GAP = 0.1  # × eye distance: the widest rest gap of an inner-lip pair (about 6 mm)
MIN_RINGS = 3  # mesh edges: pairs closer than this are neighbours on the skin, not lips
SLICE = 0.03  # × eye distance: sideways slices for the front-of-mouth filter
FRONT_DEPTH = 0.05  # × eye distance: how far behind a slice's front pair a pair may lie
UPPER_WEIGHT = 1e4
FACE_WEIGHT = 1e-2
RIDGE = 1e-6


# -- where: the detector --------------------------------------------------------------------------

def _mel_filters(bands: int = MEL_BANDS, size: int = FFT_SIZE, rate: int = SAMPLE_RATE
                 ) -> np.ndarray:
    """Triangular mel filters (bands, size // 2 + 1) on the HTK mel scale."""
    def mel(hz: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + hz / 700.0)

    edges_mel = np.linspace(mel(np.array(MEL_RANGE_HZ[0])), mel(np.array(MEL_RANGE_HZ[1])),
                            bands + 2)
    edges = 700.0 * (10 ** (edges_mel / 2595.0) - 1.0)
    hz = np.arange(size // 2 + 1) * rate / size
    filters = np.zeros((bands, len(hz)))
    for b in range(bands):
        lo, mid, hi = edges[b], edges[b + 1], edges[b + 2]
        filters[b] = np.clip(np.minimum((hz - lo) / (mid - lo), (hi - hz) / (hi - mid)), 0, None)
    return filters


def closure_features(samples: np.ndarray, frames: int) -> np.ndarray:
    """Per-frame log mel energies (frames, SUBFRAMES × MEL_BANDS) of 16 kHz mono ``samples``,
    in dB relative to the take's loud speech / 20 (see the module's description)."""
    samples = np.asarray(samples, np.float64).ravel()
    needed = frames * SAMPLES_PER_FRAME
    hop = SAMPLES_PER_FRAME // SUBFRAMES
    # Sub-frame k of frame t is centred at t·640 + 80 + 160·k.
    padded = np.pad(samples[:needed], (WINDOW // 2, WINDOW + max(0, needed - len(samples))))
    centres = np.arange(frames * SUBFRAMES) * hop + hop // 2
    if not len(centres):
        return np.zeros((0, SUBFRAMES * MEL_BANDS))
    starts = centres  # padded by WINDOW // 2, so a window starting here is centred there
    index = starts[:, None] + np.arange(WINDOW)[None, :]
    windows = padded[index] * np.hanning(WINDOW)[None, :]
    power = np.abs(np.fft.rfft(windows, FFT_SIZE, axis=1)) ** 2
    mel = power @ _mel_filters().T  # (frames × SUBFRAMES, MEL_BANDS)
    level = 10 * np.log10(np.maximum(mel, 1e-12))
    total = 10 * np.log10(np.maximum(mel.sum(axis=1), 1e-12))
    # A take quieter than about -80 dBFS is silence, not speech to be normalised up.
    reference = max(float(np.percentile(total, 95)), SILENCE_DB)
    relative = np.maximum(level - reference, FLOOR_DB) / 20.0
    return relative.reshape(frames, SUBFRAMES * MEL_BANDS)


def with_context(features: np.ndarray, context: int = CONTEXT) -> np.ndarray:
    """Each frame's features with ``context`` frames on each side, edges padded with silence
    (frames, (2·context + 1) × D)."""
    frames = len(features)
    silence = np.full((context, features.shape[1]), FLOOR_DB / 20.0)
    padded = np.concatenate([silence, features, silence])
    return np.concatenate([padded[k: k + frames] for k in range(2 * context + 1)], axis=1)


@dataclass
class ClosureDetector:
    """The p/b/m frame detector: a perceptron with one tanh hidden layer over normalised
    context features (see the module's description)."""

    mean: np.ndarray  # (FEATURES,)
    scale: np.ndarray  # (FEATURES,)
    hidden_weight: np.ndarray  # (FEATURES, H)
    hidden_bias: np.ndarray  # (H,)
    output_weight: np.ndarray  # (H,)
    output_bias: float
    threshold: float  # probability at which a frame counts as closed

    def probability_of(self, inputs: np.ndarray) -> np.ndarray:
        """p/b/m probability (N,) of context features (N, FEATURES)."""
        hidden = np.tanh(((inputs - self.mean) / self.scale) @ self.hidden_weight
                         + self.hidden_bias)
        logit = hidden @ self.output_weight + self.output_bias
        return 1.0 / (1.0 + np.exp(-np.clip(logit, -40, 40)))

    def probability(self, samples: np.ndarray, frames: int) -> np.ndarray:
        """p/b/m probability (frames,) per 25 fps frame of 16 kHz ``samples``."""
        if frames <= 0:
            return np.zeros(0)
        return self.probability_of(with_context(closure_features(samples, frames)))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        np.savez(path, format=np.int64(DETECTOR_FORMAT), context=np.int64(CONTEXT),
                 mel_bands=np.int64(MEL_BANDS), subframes=np.int64(SUBFRAMES),
                 mean=self.mean.astype(np.float32), scale=self.scale.astype(np.float32),
                 hidden_weight=self.hidden_weight.astype(np.float32),
                 hidden_bias=self.hidden_bias.astype(np.float32),
                 output_weight=self.output_weight.astype(np.float32),
                 output_bias=np.float32(self.output_bias), threshold=np.float32(self.threshold))
        return path


def load_detector(path: str | Path = DETECTOR_FILE) -> ClosureDetector:
    """A :class:`ClosureDetector` from an ``.npz`` written by :meth:`ClosureDetector.save`.
    Refuses pickled objects, a different feature layout and wrong shapes with a
    ``ValueError`` that names the file."""
    path = Path(path)
    what = f"The lip-closure detector '{path}'"
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except FileNotFoundError:
        raise ValueError(f"{what} does not exist; rebuild it with "
                         "'python -m server.living.train_closure OUT'.") from None
    except ValueError as exc:  # object arrays need pickle, which is refused
        raise ValueError(f"{what} holds pickled objects or is not an .npz file ({exc}); "
                         "only plain number arrays are read.") from None
    except (OSError, EOFError) as exc:
        raise ValueError(f"{what} cannot be read as an .npz file ({exc}).") from None
    needed = ("format", "context", "mel_bands", "subframes", "mean", "scale", "hidden_weight",
              "hidden_bias", "output_weight", "output_bias", "threshold")
    missing = [key for key in needed if key not in arrays]
    if missing:
        raise ValueError(f"{what} lacks {', '.join(missing)}.")
    for key in needed:
        if arrays[key].dtype.kind not in "fiu":
            raise ValueError(f"{what}: '{key}' is not a number array ({arrays[key].dtype}).")
    layout = (int(arrays["format"]), int(arrays["context"]), int(arrays["mel_bands"]),
              int(arrays["subframes"]))
    if layout != (DETECTOR_FORMAT, CONTEXT, MEL_BANDS, SUBFRAMES):
        raise ValueError(f"{what} is for another feature layout (format, context, mel bands, "
                         f"sub-frames = {layout}; this version reads "
                         f"{(DETECTOR_FORMAT, CONTEXT, MEL_BANDS, SUBFRAMES)}).")
    hidden = arrays["hidden_bias"].shape[0] if arrays["hidden_bias"].ndim == 1 else -1
    shapes = {"mean": (FEATURES,), "scale": (FEATURES,), "hidden_weight": (FEATURES, hidden),
              "hidden_bias": (hidden,), "output_weight": (hidden,), "output_bias": (),
              "threshold": ()}
    for key, shape in shapes.items():
        if hidden < 1 or arrays[key].shape != shape:
            raise ValueError(f"{what}: '{key}' has shape {arrays[key].shape}, expected "
                             f"{shape if hidden >= 1 else 'a hidden layer (H,)'}.")
    values = {key: arrays[key].astype(np.float64) for key in shapes}
    if not all(np.isfinite(v).all() for v in values.values()) or (values["scale"] <= 0).any():
        raise ValueError(f"{what} holds non-finite numbers or non-positive scales.")
    if not 0.0 < float(values["threshold"]) < 1.0:
        raise ValueError(f"{what}: the threshold must lie between 0 and 1.")
    return ClosureDetector(mean=values["mean"], scale=values["scale"],
                           hidden_weight=values["hidden_weight"],
                           hidden_bias=values["hidden_bias"],
                           output_weight=values["output_weight"],
                           output_bias=float(values["output_bias"]),
                           threshold=float(values["threshold"]))


@lru_cache(maxsize=1)
def default_detector() -> ClosureDetector:
    """The committed detector (``closure_detector.npz``), loaded once."""
    return load_detector(DETECTOR_FILE)


def weights_from_probability(probability: np.ndarray, threshold: float) -> np.ndarray:
    """The closure track (T,) in [0, 1] from per-frame p/b/m probabilities: 1 from
    ``threshold`` up, a smoothstep from half of it, and ramps of ``RAMP`` in and out."""
    probability = np.asarray(probability, np.float64)
    x = np.clip((probability - 0.5 * threshold) / (0.5 * threshold), 0.0, 1.0)
    weights = x * x * (3 - 2 * x)
    for share in (1.0,) * HOLD + (RAMP,):
        padded = np.pad(weights, 1)
        weights = np.maximum(weights, share * np.maximum(padded[:-2], padded[2:]))
    return weights


def closure_weights(samples: np.ndarray, frames: int,
                    detector: ClosureDetector | None = None) -> np.ndarray:
    """How strongly the lips must be shut (frames,) in [0, 1] per 25 fps frame of a take whose
    audio is ``samples`` (16 kHz mono float): 1 at detected p, b and m, with short ramps. The
    committed detector unless ``detector`` is given."""
    detector = detector or default_detector()
    return weights_from_probability(detector.probability(samples, frames), detector.threshold)


# -- how: the closing operator --------------------------------------------------------------------

@dataclass
class LipVertices:
    """Inner-lip pairs (``upper[i]`` closes onto ``lower[i]``) and the still upper face."""

    upper: np.ndarray  # (P,) vertex indices
    lower: np.ndarray  # (P,)
    upper_face: np.ndarray  # (U,) upper face and eyes, kept still while closing


@dataclass
class LipClosure:
    """The lip-closing operator of one FLAME file (see the module's description): the Gram
    matrix ``gram`` = AᵀA of the inner-lip pair rows and the ``penalty`` P, both (E, E), and
    the pairs and their rest gap, for measuring."""

    gram: np.ndarray  # (E, E)
    penalty: np.ndarray  # (E, E)
    upper: np.ndarray  # (P,) vertex indices
    lower: np.ndarray  # (P,)
    rest_gap: float  # metres: mean distance of the pairs at rest

    @property
    def n_expression(self) -> int:
        return int(self.gram.shape[0])

    def change(self, n_expression: int | None = None) -> np.ndarray:
        """X (n, n) with Δe = −X·e for takes with the first ``n`` expression components."""
        n = self.n_expression if n_expression is None else n_expression
        gram = self.gram[:n, :n]
        return np.linalg.solve(gram + self.penalty[:n, :n], gram)

    def to_list(self) -> list[float]:
        """Flat floats (for a Blender ID property): E, P, rest gap, gram, penalty, upper,
        lower."""
        n, p = self.n_expression, len(self.upper)
        return [float(n), float(p), float(self.rest_gap), *self.gram.ravel().tolist(),
                *self.penalty.ravel().tolist(), *map(float, self.upper), *map(float, self.lower)]

    @classmethod
    def from_list(cls, values: list[float]) -> LipClosure:
        """The :class:`LipClosure` that :meth:`to_list` wrote; ``ValueError`` when malformed."""
        values = np.asarray(values, np.float64).ravel()
        if len(values) < 3 or not np.isfinite(values).all():
            raise ValueError("The stored lip closure is empty or damaged; recompute it from "
                             "the head's FLAME file.")
        n, p = int(values[0]), int(values[1])
        if n < 1 or p < 1 or n != values[0] or p != values[1] or \
                len(values) != 3 + 2 * n * n + 2 * p:
            raise ValueError("The stored lip closure has the wrong length for its sizes; "
                             "recompute it from the head's FLAME file.")
        gram = values[3: 3 + n * n].reshape(n, n)
        penalty = values[3 + n * n: 3 + 2 * n * n].reshape(n, n)
        pairs = values[3 + 2 * n * n:].astype(np.int64)
        return cls(gram=gram, penalty=penalty, upper=pairs[:p], lower=pairs[p:],
                   rest_gap=float(values[2]))


def _neighbours(faces: np.ndarray, n_vertices: int) -> list[set[int]]:
    neighbours: list[set[int]] = [set() for _ in range(n_vertices)]
    for a, b, c in np.asarray(faces, np.int64):
        neighbours[a].update((b, c))
        neighbours[b].update((a, c))
        neighbours[c].update((a, b))
    return neighbours


def _within_rings(start: int, rings: int, neighbours: list[set[int]]) -> set[int]:
    seen, frontier = {start}, {start}
    for _ in range(rings):
        frontier = {n for v in frontier for n in neighbours[v]} - seen
        seen |= frontier
    return seen


def find_lips(flame: FlameData) -> LipVertices:
    """The inner-lip pairs and the upper face of ``flame``, from its geometry and skinning:

    1. the mouth region: non-eyeball vertices in front of the jaw joint, more than 0.3 × the
       eye distance below the eyes and within one eye distance of the face's middle sideways;
    2. lower-lip candidates there are skinned to the jaw (weight > 0.5), upper-lip candidates
       are not; each lower candidate is paired with its nearest upper candidate when that lies
       within ``MAX_GAP`` × the eye distance and more than ``MIN_RINGS`` mesh edges away, and
       each upper vertex keeps only its nearest such lower vertex;
    3. per sideways slice of ``SLICE`` × the eye distance, the pairs within ``FRONT_DEPTH`` ×
       the eye distance of the slice's frontmost pair are kept (the lip line, not the inside
       of the mouth);
    4. the upper face: vertices above the middle between the eyes and the lips (eyes
       included) not skinned to the jaw.

    Raises ``ValueError`` when no inner-lip pairs are found."""
    v = flame.v_template
    joints = flame.rest_joints()
    eyes = joints[[LEFT_EYE, RIGHT_EYE]]
    eye_distance = float(np.linalg.norm(eyes[0] - eyes[1]))
    if eye_distance <= 0:
        raise ValueError("This FLAME file's eye joints coincide; its lips cannot be found.")
    eye_y, middle_x = float(eyes[:, 1].mean()), float(eyes[:, 0].mean())
    eyeball = flame.weights[:, [LEFT_EYE, RIGHT_EYE]].max(axis=1) > 0.5
    jaw_side = flame.weights[:, JAW] > JAW_SIDE
    region = (~eyeball & (v[:, 2] > joints[JAW, 2]) & (v[:, 1] < eye_y - 0.3 * eye_distance)
              & (np.abs(v[:, 0] - middle_x) < eye_distance))
    lower_all = np.flatnonzero(region & jaw_side)
    upper_all = np.flatnonzero(region & ~jaw_side)
    no_lips = ValueError("No inner-lip vertices were found in this FLAME file (lower-lip "
                         "vertices skinned to the jaw facing upper-lip vertices across a mouth "
                         "opening); is it a FLAME head with a mouth?")
    if not len(lower_all) or not len(upper_all):
        raise no_lips
    max_gap = MAX_GAP * eye_distance
    nearest = np.empty(len(lower_all), np.int64)
    distance = np.empty(len(lower_all))
    for start in range(0, len(lower_all), 512):
        chunk = lower_all[start: start + 512]
        d = np.linalg.norm(v[chunk, None, :] - v[None, upper_all, :], axis=2)
        best = np.argmin(d, axis=1)
        nearest[start: start + 512] = upper_all[best]
        distance[start: start + 512] = d[np.arange(len(chunk)), best]
    close = distance <= max_gap
    neighbours = _neighbours(flame.faces, flame.n_vertices)
    pairs = [(int(u), int(lo)) for lo, u in zip(lower_all[close], nearest[close], strict=True)
             if u not in _within_rings(int(lo), MIN_RINGS, neighbours)]
    if not pairs:
        raise no_lips
    # Each upper vertex keeps its nearest lower one: the lip margin, not the skin below it.
    gap = {pair: float(np.linalg.norm(v[pair[0]] - v[pair[1]])) for pair in pairs}
    best: dict[int, tuple[int, int]] = {}
    for pair in pairs:
        if pair[0] not in best or gap[pair] < gap[best[pair[0]]]:
            best[pair[0]] = pair
    upper = np.array(sorted(best))
    lower = np.array([best[u][1] for u in upper])
    middle = (v[upper] + v[lower]) / 2
    slices = np.floor((middle[:, 0] - middle_x) / (SLICE * eye_distance)).astype(np.int64)
    keep = np.zeros(len(upper), bool)
    for s in np.unique(slices):
        here = slices == s
        keep |= here & (middle[:, 2] >= middle[here, 2].max() - FRONT_DEPTH * eye_distance)
    upper, lower = upper[keep], lower[keep]
    mouth_y = float(middle[keep, 1].mean())
    upper_face = np.flatnonzero((v[:, 1] > (eye_y + mouth_y) / 2) & ~jaw_side)
    return LipVertices(upper=upper, lower=lower, upper_face=upper_face)


def lip_closure(flame: FlameData, lips: LipVertices | None = None,
                upper_weight: float = UPPER_WEIGHT, face_weight: float = FACE_WEIGHT,
                ridge: float = RIDGE) -> LipClosure:
    """The lip-closing operator of ``flame`` (see the module's description)."""
    lips = lips or find_lips(flame)
    basis = flame.shapedirs[:, :, SHAPE_SPACE_DIM:]  # (V, 3, E)
    n_exp = basis.shape[2]
    pairs = (basis[lips.upper] - basis[lips.lower]).reshape(-1, n_exp)
    gram = pairs.T @ pairs
    upper = basis[lips.upper_face].reshape(-1, n_exp)
    whole = basis.reshape(-1, n_exp)
    count = len(lips.upper)
    scale = float(np.mean(np.diag(gram))) or 1.0
    penalty = (upper_weight * count / max(len(lips.upper_face), 1) * (upper.T @ upper)
               + face_weight * count / flame.n_vertices * (whole.T @ whole)
               + ridge * scale * np.eye(n_exp))
    v = flame.v_template
    rest_gap = float(np.linalg.norm(v[lips.upper] - v[lips.lower], axis=1).mean())
    return LipClosure(gram=gram, penalty=penalty, upper=lips.upper, lower=lips.lower,
                      rest_gap=rest_gap)


def close_lips(expression: np.ndarray, jaw: np.ndarray, weights: np.ndarray,
               closure: LipClosure, amount: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A take's expression (T, E) and jaw (T, 3) with the lips shut by ``weights`` (T,) ×
    ``amount``: the jaw brought toward rest and the smallest expression change that puts the
    inner lips back together (see the module's description). ``amount`` 0 returns the inputs
    unchanged; E may be at most the FLAME file's expression count."""
    expression = np.asarray(expression)
    jaw = np.asarray(jaw)
    weights = np.asarray(weights, np.float64).ravel()
    frames, n = expression.shape
    if jaw.shape != (frames, 3) or weights.shape != (frames,):
        raise ValueError(f"close_lips needs expression (T, E), jaw (T, 3) and weights (T,) of "
                         f"one length; got {expression.shape}, {jaw.shape}, {weights.shape}.")
    if n > closure.n_expression:
        raise ValueError(f"The take has {n} expression components; the head's lip closure "
                         f"knows {closure.n_expression}.")
    if amount == 0 or not weights.any():
        return expression, jaw
    strength = np.clip(weights * amount, 0.0, 1.0)[:, None]
    change = expression.astype(np.float64) @ closure.change(n).T  # (T, E): −Δe per frame
    closed_expression = expression - strength * change
    closed_jaw = jaw * (1.0 - strength)
    return closed_expression.astype(expression.dtype), closed_jaw.astype(jaw.dtype)


def inner_lip_gap(vertices: np.ndarray, closure: LipClosure | LipVertices) -> np.ndarray:
    """Mean distance (T,) of the inner-lip pairs in posed ``vertices`` (T, V, 3), metres."""
    return np.linalg.norm(vertices[:, closure.upper] - vertices[:, closure.lower],
                          axis=-1).mean(axis=1)
