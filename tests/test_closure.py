# SPDX-License-Identifier: GPL-3.0-or-later
"""Lip closure: the inner-lip pairs of a FLAME file, the closing operator, the p/b/m detector."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from server.demo.corpus import CLOSURES
from server.demo.head import EXPRESSIONS, build_demo_head
from server.flame import SHAPE_SPACE_DIM, FlameData, flame_vertices
from server.living.closure import (
    DETECTOR_FILE,
    ClosureDetector,
    LipClosure,
    close_lips,
    closure_weights,
    default_detector,
    find_lips,
    inner_lip_gap,
    lip_closure,
    load_detector,
)
from server.living.train_closure import OPEN_VOWELS
from tests.builders import ROOT, synthetic_flame

SENTENCE = ROOT / "server" / "demo" / "sentence.wav"
MOUTH_Y = -0.05


@pytest.fixture(scope="module")
def demo_head():
    return build_demo_head()


@pytest.fixture(scope="module")
def demo_closure(demo_head):
    return lip_closure(demo_head.flame)


def mouth_flame(seed: int = 0, n_expression: int = 10) -> tuple[FlameData, np.ndarray,
                                                                 np.ndarray]:
    """A small face with a real mouth slit, unlike the demo head's topology: a curved grid
    (5 mm spacing) whose lower lip is a copy of the slit vertices 1 mm below the upper lip,
    skinned to the jaw with a smooth seam on the cheeks; the joints sit on isolated marker
    vertices. Expression 0 parts the lips, 1 raises the brows, 2 presses the lips, the rest
    are seeded smooth noise over the whole face. Returns the FLAME arrays and the true
    (upper, lower) pairs."""
    rng = np.random.default_rng(seed)
    xs = np.linspace(-0.05, 0.05, 21)
    ys = np.linspace(0.06, -0.09, 31)
    mouth_row = int(np.argmin(np.abs(ys - MOUTH_Y)))
    gx, gy = np.meshgrid(xs, ys)
    grid = np.stack([gx, gy, 0.08 - 8 * gx**2 - 3 * (gy + 0.02) ** 2], axis=-1).reshape(-1, 3)
    index = np.arange(len(xs) * len(ys)).reshape(len(ys), len(xs))
    slit = np.flatnonzero(np.abs(xs) < 0.02)[1:-1]
    upper = index[mouth_row, slit]
    lower = len(grid) + np.arange(len(slit))
    lower_lip = grid[upper] - [0, 0.001, 0]
    below = index.copy()
    below[mouth_row, slit] = lower
    faces = []
    for rows, idx in ((range(mouth_row), index), (range(mouth_row, len(ys) - 1), below)):
        for r in rows:
            for c in range(len(xs) - 1):
                a, b, d, e = idx[r, c], idx[r, c + 1], idx[r + 1, c], idx[r + 1, c + 1]
                faces += [[a, d, b], [b, d, e]]
    joints = np.array([[0, -0.10, -0.02], [0, -0.08, -0.02], [0, -0.02, -0.01],
                       [0.032, 0.03, 0.06], [-0.032, 0.03, 0.06]])
    v = np.concatenate([grid, lower_lip, joints])
    n = len(v)
    markers = np.arange(n - 5, n)
    j_regressor = np.zeros((5, n))
    j_regressor[np.arange(5), markers] = 1.0
    weights = np.zeros((n, 5))
    jaw = np.clip((MOUTH_Y + 0.0015 - v[:, 1]) / 0.005, 0, 1)  # 0.3 on the mouth row
    jaw[lower] = 1.0
    weights[:, 2] = jaw
    weights[:, 1] = 1 - jaw
    weights[markers] = 0
    weights[markers, [0, 1, 2, 3, 4]] = 1
    basis = np.zeros((n, 3, n_expression))
    near_mouth = np.exp(-0.5 * ((v[:, 1] - MOUTH_Y) / 0.006) ** 2) * (np.abs(v[:, 0]) < 0.02)
    side = np.where(v[:, 1] >= MOUTH_Y - 1e-9, 1.0, -1.0)
    side[lower] = -1.0
    basis[:, 1, 0] = 0.003 * side * near_mouth
    basis[:, 1, 1] = 0.004 * (v[:, 1] > 0.03)
    basis[:, 1, 2] = -0.2 * (v[:, 1] - MOUTH_Y) * near_mouth
    for k in range(3, n_expression):
        waves = rng.normal(0, 30, (3, 3))  # per coordinate: a plane wave of about 3-10 cm
        basis[:, :, k] = 5e-4 * np.sin(v @ waves + rng.uniform(0, 2 * np.pi, 3))
    basis[markers] = 0
    shapedirs = np.zeros((n, 3, SHAPE_SPACE_DIM + n_expression))
    shapedirs[:, :, SHAPE_SPACE_DIM:] = basis
    kintree = np.array([[2**32 - 1, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64)
    flame = FlameData(v_template=v, faces=np.array(faces), shapedirs=shapedirs,
                      posedirs=np.zeros((n, 3, 36)), j_regressor=j_regressor, weights=weights,
                      kintree_table=kintree)
    return flame, upper, lower


# -- the inner-lip pairs --------------------------------------------------------------------------

def test_the_pairs_on_the_demo_head_are_its_lip_line(demo_head):
    lips = find_lips(demo_head.flame)
    upper_line = demo_head.groups["upper_lip_line"]
    lower_line = demo_head.groups["lower_lip_line"]
    assert len(lips.upper) >= 0.8 * len(upper_line)
    assert set(lips.upper) <= set(upper_line)
    # The lower copies share their upper vertex's position: nearly every pair is exact.
    true_lower = dict(zip(upper_line.tolist(), lower_line.tolist(), strict=True))
    assert np.mean([true_lower[u] == lo for u, lo in zip(lips.upper, lips.lower,
                                                         strict=True)]) >= 0.9
    assert not set(lips.upper_face) & set(demo_head.groups["lower_face"])
    assert set(demo_head.groups["upper_face"]) <= set(lips.upper_face)


def test_the_pairs_on_a_synthetic_face_with_a_mouth():
    flame, upper, lower = mouth_flame()
    lips = find_lips(flame)
    truth = set(zip(upper.tolist(), lower.tolist(), strict=True))
    found = set(zip(lips.upper.tolist(), lips.lower.tolist(), strict=True))
    assert found <= truth
    assert len(found) >= len(truth) - 2  # the pairs beside the corners touch across them


def test_a_head_without_a_mouth_is_refused_in_a_sentence():
    with pytest.raises(ValueError, match="No inner-lip vertices"):
        find_lips(synthetic_flame())


# -- closing ------------------------------------------------------------------------------------

def _open_frames(n_expression: int, columns: dict[int, float], jaw_opening: float, frames: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    expression = np.zeros((frames, n_expression), np.float32)
    for column, value in columns.items():
        expression[:, column] = value
    jaw = np.zeros((frames, 3), np.float32)
    jaw[:, 0] = jaw_opening
    return expression, jaw


def test_closing_an_open_demo_mouth_leaves_the_upper_face_still(demo_head, demo_closure):
    flame = demo_head.flame
    columns = {EXPRESSIONS.index("lips part"): 1.2, EXPRESSIONS.index("lip spread"): 0.6,
               EXPRESSIONS.index("brow raise"): 1.0, EXPRESSIONS.index("eye widen"): 0.8,
               EXPRESSIONS.index("mouth corners up"): 0.7}
    expression, jaw = _open_frames(flame.n_expression, columns, 0.2, 2)
    closed_expression, closed_jaw = close_lips(expression, jaw, np.array([0.0, 1.0]),
                                               demo_closure)
    before = flame_vertices(flame, expression, jaw)
    after = flame_vertices(flame, closed_expression, closed_jaw)
    upper, lower = demo_head.groups["upper_lip_line"], demo_head.groups["lower_lip_line"]
    gap_before = np.linalg.norm(before[:, upper] - before[:, lower], axis=-1).mean(axis=1)
    gap_after = np.linalg.norm(after[:, upper] - after[:, lower], axis=-1).mean(axis=1)
    assert gap_before[1] > 0.01  # a wide-open mouth
    assert gap_after[1] < 0.1 * gap_before[1]
    assert gap_after[0] == pytest.approx(gap_before[0])  # weight 0: untouched
    face = demo_head.groups["upper_face"]
    assert np.linalg.norm(after[1, face] - before[1, face], axis=-1).max() < 1e-4
    # The smile and the brows stay (the change is the one that closes the lips).
    assert closed_expression[1, EXPRESSIONS.index("brow raise")] == pytest.approx(1.0, abs=0.02)
    assert closed_expression[1, EXPRESSIONS.index("mouth corners up")] > 0.5


def test_closing_on_a_synthetic_face_with_a_mouth():
    flame, upper, lower = mouth_flame()
    closure = lip_closure(flame)
    rng = np.random.default_rng(1)
    expression = rng.normal(0, 0.5, (4, flame.n_expression)).astype(np.float32)
    expression[:, 0] = 2.0  # lips apart
    expression[:, 1] = 1.0  # brows up
    jaw = np.zeros((4, 3), np.float32)
    jaw[:, 0] = 0.15
    weights = np.array([0.0, 0.5, 1.0, 1.0])
    closed_expression, closed_jaw = close_lips(expression, jaw, weights, closure)
    before = flame_vertices(flame, expression, jaw)
    after = flame_vertices(flame, closed_expression, closed_jaw)
    gap_before = inner_lip_gap(before, closure)
    gap_after = inner_lip_gap(after, closure)
    assert gap_after[2] < 0.1 * gap_before[2]
    assert gap_after[0] == pytest.approx(gap_before[0])
    assert gap_after[2] < gap_after[1] < gap_before[1]  # half weight: half way
    np.testing.assert_allclose(closed_jaw[2:], 0.0)
    face = np.flatnonzero(flame.v_template[:, 1] > 0.0)
    assert np.linalg.norm(after[2:, face] - before[2:, face], axis=-1).max() < 1e-4


def test_amount_zero_and_no_weights_give_the_inputs_back(demo_closure):
    rng = np.random.default_rng(2)
    expression = rng.normal(0, 1, (30, 100)).astype(np.float32)
    jaw = rng.normal(0, 0.1, (30, 3)).astype(np.float32)
    weights = rng.uniform(0, 1, 30)
    for args in ((weights, 0.0), (np.zeros(30), 1.0)):
        out_expression, out_jaw = close_lips(expression, jaw, args[0], demo_closure, args[1])
        np.testing.assert_array_equal(out_expression, expression)
        np.testing.assert_array_equal(out_jaw, jaw)
    closed, _ = close_lips(expression, jaw, weights, demo_closure, 0.5)
    assert closed.dtype == np.float32 and not np.array_equal(closed, expression)


def test_fewer_expression_components_and_bad_shapes(demo_closure):
    expression, jaw = _open_frames(50, {EXPRESSIONS.index("lips part"): 1.0}, 0.1, 3)
    closed, _ = close_lips(expression, jaw, np.ones(3), demo_closure)
    assert closed.shape == (3, 50)
    assert closed[0, EXPRESSIONS.index("lips part")] < 0.2
    with pytest.raises(ValueError, match="one length"):
        close_lips(expression, jaw[:2], np.ones(3), demo_closure)
    with pytest.raises(ValueError, match="knows 100"):
        close_lips(np.zeros((3, 120)), jaw, np.ones(3), demo_closure)


def test_a_minute_take_closes_in_one_solve(demo_closure):
    """1500 frames at once, dtypes kept (bench/lip_closure.py times it)."""
    rng = np.random.default_rng(3)
    expression = rng.normal(0, 1, (1500, 100)).astype(np.float32)
    jaw = rng.normal(0, 0.1, (1500, 3)).astype(np.float32)
    weights = rng.uniform(0, 1, 1500)
    closed, closed_jaw = close_lips(expression, jaw, weights, demo_closure)
    assert closed.shape == expression.shape and closed.dtype == np.float32
    assert closed_jaw.dtype == np.float32
    np.testing.assert_allclose(closed_jaw, jaw * (1 - weights[:, None]), rtol=1e-5, atol=1e-6)


def test_the_closure_travels_as_a_flat_list(demo_closure):
    values = demo_closure.to_list()
    assert all(isinstance(x, float) for x in values)
    again = LipClosure.from_list(values)
    np.testing.assert_array_equal(again.gram, demo_closure.gram)
    np.testing.assert_array_equal(again.penalty, demo_closure.penalty)
    np.testing.assert_array_equal(again.upper, demo_closure.upper)
    np.testing.assert_array_equal(again.lower, demo_closure.lower)
    for broken in (values[:-1], [], [float("nan")] * len(values), [2.5] + values[1:]):
        with pytest.raises(ValueError, match="recompute it|damaged"):
            LipClosure.from_list(broken)


# -- where: the detector --------------------------------------------------------------------------

def _sentence() -> tuple[np.ndarray, int, list]:
    samples, rate = soundfile.read(str(SENTENCE), dtype="float32")
    assert rate == 16_000
    phones = json.loads(SENTENCE.with_suffix(".json").read_text())["phones"]
    return samples, len(samples) // 640, phones


def _middles(phones: list, names: tuple[str, ...], min_seconds: float = 0.0) -> np.ndarray:
    return np.array([int((s + e) / 2 * 25) for p, s, e in phones
                     if p in names and e - s >= min_seconds - 1e-9])


def test_the_detector_finds_p_b_m_in_the_held_out_sentence():
    """The shipped sentence is a held-out sentence in the held-out voice: the detector never
    heard either."""
    samples, frames, phones = _sentence()
    weights = closure_weights(samples, frames)
    assert weights.shape == (frames,) and 0 <= weights.min() and weights.max() <= 1
    bilabial = _middles(phones, CLOSURES, 0.04)
    vowels = _middles(phones, OPEN_VOWELS)
    assert len(bilabial) >= 6 and len(vowels) >= 8
    assert np.mean(weights[bilabial] >= 0.7) >= 0.75
    assert np.mean(weights[vowels] >= 0.5) <= 0.1
    # Closures are short: most of the sentence stays open.
    assert np.mean(weights >= 0.5) < 0.3


def test_silence_and_a_quiet_recording():
    samples, frames, _ = _sentence()
    np.testing.assert_array_equal(closure_weights(np.zeros(16_000), 25), np.zeros(25))
    loud = closure_weights(samples, frames)
    quiet = closure_weights(0.05 * samples, frames)
    np.testing.assert_allclose(quiet, loud, atol=1e-4)  # the level does not matter
    assert closure_weights(samples[:100], 0).shape == (0,)


def _saved(detector: ClosureDetector, path: Path, **replace) -> Path:
    detector.save(path)
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays.update(replace)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_the_committed_detector_is_small_and_loads():
    assert DETECTOR_FILE.stat().st_size < 200_000
    detector = default_detector()
    assert 0 < detector.threshold < 1
    again = load_detector(_saved(detector, Path(pytest.importorskip("tempfile").mkdtemp())
                                 / "copy.npz"))
    np.testing.assert_allclose(again.hidden_weight, detector.hidden_weight, rtol=1e-6)


@pytest.mark.parametrize("damage,message", [
    ({"hidden_weight": np.zeros((10, 4), np.float32)}, "shape"),
    ({"output_weight": np.zeros(3, np.float32)}, "shape"),
    ({"mean": np.array([object()] * 4, dtype=object)}, "pickled objects"),
    ({"context": np.int64(5)}, "another feature layout"),
    ({"threshold": None}, "lacks threshold"),
    ({"scale": np.full(480, np.nan, np.float32)}, "non-finite"),
    ({"threshold": np.float32(1.5)}, "between 0 and 1"),
    ({"mean": np.array(["a"] * 480)}, "not a number array"),
])
def test_a_malformed_detector_is_refused(tmp_path, damage, message):
    path = _saved(default_detector(), tmp_path / "bad.npz", **damage)
    with pytest.raises(ValueError, match=message):
        load_detector(path)


def test_a_detector_file_that_is_not_an_npz(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"not a zip at all" * 10)
    with pytest.raises(ValueError, match="lip-closure detector"):
        load_detector(path)
    with pytest.raises(ValueError, match="does not exist"):
        load_detector(tmp_path / "missing.npz")
