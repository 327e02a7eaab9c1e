# SPDX-License-Identifier: GPL-3.0-or-later
"""FLAME files: safe legacy loading, smplx parity, the jaw correctives, refusals."""

import importlib.util
import os
import pickle

import numpy as np
import pytest

from server.flame import (
    FlameFileError,
    FlameModel,
    axis_angle_to_matrix,
    jaw_corrective_weights,
    load_flame_file,
)
from server.safe_pickle import UnsafeFileError
from tests.builders import synthetic_flame


def test_chumpy_is_not_installed():
    assert importlib.util.find_spec("chumpy") is None


def test_legacy_file_loads_the_same_arrays_as_the_clean_one(flame_files):
    legacy = load_flame_file(flame_files["legacy"])
    clean = load_flame_file(flame_files["clean"])
    reference = synthetic_flame()
    for name in ("v_template", "shapedirs", "posedirs", "j_regressor", "weights"):
        assert np.array_equal(getattr(legacy, name), getattr(reference, name)), name
        assert np.array_equal(getattr(clean, name), getattr(reference, name)), name
    assert legacy.n_expression == 100
    assert list(legacy.parents) == [-1, 0, 1, 1, 1]


def _smplx_on_clean_file(path, tmp_path):
    """smplx's own loader on the clean file (it needs a folder and a landmark file)."""
    import smplx
    import torch

    folder = tmp_path / "smplx"
    folder.mkdir()
    (folder / "FLAME_NEUTRAL.pkl").write_bytes(path.read_bytes())
    with open(folder / "flame_static_embedding.pkl", "wb") as f:
        pickle.dump({"lmk_face_idx": np.zeros(0, np.int64), "lmk_b_coords": np.zeros((0, 3))}, f)
    return smplx.FLAME(model_path=str(folder), num_betas=300, num_expression_coeffs=100,
                       dtype=torch.float64)


def test_legacy_file_forward_matches_smplx_on_the_clean_file(flame_files, tmp_path):
    import torch

    rng = np.random.default_rng(4)
    expression = rng.normal(0, 1.5, (6, 100))
    jaw = rng.normal(0, 0.15, (6, 3))
    ours = FlameModel(load_flame_file(flame_files["legacy"])).vertices(expression, jaw)
    reference_model = _smplx_on_clean_file(flame_files["clean"], tmp_path)
    zeros = torch.zeros(6, 3, dtype=torch.float64)
    with torch.no_grad():
        reference = reference_model(
            betas=torch.zeros(6, 300, dtype=torch.float64),
            expression=torch.as_tensor(expression), jaw_pose=torch.as_tensor(jaw),
            global_orient=zeros, neck_pose=zeros, leye_pose=zeros, reye_pose=zeros,
        ).vertices.numpy()
    assert ours.shape == (6, 300, 3)
    print(f"legacy file vs smplx on the clean file: {np.abs(ours - reference).max():.2e} m")
    assert np.abs(ours - reference).max() < 1e-7


def manual_flame(data, expression, jaw):
    """FLAME written out in NumPy: blend shapes, jaw correctives (R − I), linear blend skinning
    with only the jaw rotated."""
    v_shaped = data.v_template + data.shapedirs[:, :, 300:] @ expression
    joints = data.j_regressor @ v_shaped
    rot = axis_angle_to_matrix(jaw)
    feature = np.zeros(36)
    feature[9:18] = jaw_corrective_weights(jaw)
    v_posed = v_shaped + data.posedirs @ feature
    parents = data.parents
    world = []
    for j in range(5):
        local = np.eye(4)
        local[:3, :3] = rot if j == 2 else np.eye(3)
        local[:3, 3] = joints[j] - (joints[parents[j]] if j else 0)
        world.append(local if j == 0 else world[parents[j]] @ local)
    skin = []
    for j in range(5):
        transform = world[j].copy()
        transform[:3, 3] -= world[j][:3, :3] @ joints[j]
        skin.append(transform)
    skin = np.einsum("vj,jab->vab", data.weights, np.stack(skin))
    homogeneous = np.concatenate([v_posed, np.ones((len(v_posed), 1))], 1)
    return np.einsum("vab,vb->va", skin, homogeneous)[:, :3]


def test_jaw_correctives_and_skinning_match_the_written_out_maths(flame_files):
    data = load_flame_file(flame_files["clean"])
    model = FlameModel(data)
    rng = np.random.default_rng(5)
    expression = rng.normal(0, 1, 100)
    jaw = np.array([0.25, 0.03, -0.02])
    ours = model.vertices(expression[None], jaw[None])[0]
    # smplx adds 1e-8 to the rotation angle in its Rodrigues formula: agreement is ~1e-8 m.
    assert np.abs(ours - manual_flame(data, expression, jaw)).max() < 1e-7


def test_corrective_weights_are_rotation_minus_identity():
    jaw = np.array([[0.3, 0.0, 0.0], [0.0, 0.0, 0.0]])
    weights = jaw_corrective_weights(jaw)
    assert weights.shape == (2, 9)
    c, s = np.cos(0.3), np.sin(0.3)
    assert np.allclose(weights[0], [0, 0, 0, 0, c - 1, -s, 0, s, c - 1])
    assert np.allclose(weights[1], 0)


class _WritesAFile:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_booby_trapped_pkl_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "generic_model.pkl"
    with open(path, "wb") as f:
        pickle.dump({"v_template": np.zeros((3, 3)), "hook": _WritesAFile(marker)}, f, protocol=2)
    with pytest.raises(UnsafeFileError, match="system"):
        load_flame_file(path)
    assert not marker.exists()


def test_file_of_another_kind_is_refused_clearly(tmp_path):
    rng = np.random.default_rng(0)
    n = 50
    smpl_like = {  # an SMPL body: 24 joints, 10 shape components
        "v_template": rng.random((n, 3)), "f": rng.integers(0, n, (20, 3)),
        "shapedirs": rng.random((n, 3, 10)), "posedirs": rng.random((n, 3, 207)),
        "J_regressor": rng.random((24, n)), "weights": rng.random((n, 24)),
        "kintree_table": np.zeros((2, 24), np.int64),
    }
    path = tmp_path / "basicModel_neutral.pkl"
    with open(path, "wb") as f:
        pickle.dump(smpl_like, f, protocol=2)
    with pytest.raises(FlameFileError, match="is not a FLAME model: it has 24 joints"):
        load_flame_file(path)
    text = tmp_path / "notes.pkl"
    text.write_text("hello")
    with pytest.raises(FlameFileError, match="is not a FLAME model file"):
        load_flame_file(text)
    with pytest.raises(FlameFileError, match="not found"):
        load_flame_file(tmp_path / "missing.pkl")
    (tmp_path / "zero.pkl").symlink_to("/dev/zero")
    with pytest.raises(FlameFileError, match="is not a regular file"):
        load_flame_file(tmp_path / "zero.pkl")
    with pytest.raises(FlameFileError, match="is a folder"):
        load_flame_file(tmp_path)


# -- damaged files, memory bombs (rows B22-B24, D25) --------------------------------------------

def _write_flame_dict(path, **changes):
    """The synthetic FLAME as a plain pickle of dense arrays, with ``changes`` applied."""
    data = synthetic_flame()
    payload = {"v_template": data.v_template, "f": data.faces, "shapedirs": data.shapedirs,
               "posedirs": data.posedirs, "J_regressor": data.j_regressor,
               "weights": data.weights, "kintree_table": data.kintree_table}
    for key, change in changes.items():
        payload[key] = change(payload[key].copy())
    with open(path, "wb") as f:
        pickle.dump(payload, f, protocol=2)
    return path


def _set(index, value):
    def change(array):
        array[index] = value
        return array
    return change


@pytest.mark.parametrize("key, change, message", [
    ("f", _set((3, 1), -1), "its faces do not index its 300 vertices"),
    ("f", _set((0, 0), 300), "its faces do not index its 300 vertices"),
    ("v_template", _set((5, 1), np.nan), "its 'v_template' holds NaN or infinite values"),
    ("shapedirs", _set((0, 0, 301), np.inf), "its 'shapedirs' holds NaN or infinite values"),
    ("posedirs", _set((9, 2, 11), np.nan), "its 'posedirs' holds NaN or infinite values"),
    ("weights", _set((4, 2), -np.inf), "its 'weights' holds NaN or infinite values"),
    ("J_regressor", _set((2, 7), np.nan), "its 'J_regressor' holds NaN or infinite values"),
    ("kintree_table", _set((0, 2), 4), "its joint tree does not lead"),
], ids=["face-minus-one", "face-past-end", "nan-template", "inf-shapedirs", "nan-posedirs",
        "inf-weights", "nan-regressor", "joint-tree"])
def test_damaged_flame_files_are_refused_in_one_sentence(tmp_path, key, change, message):
    path = _write_flame_dict(tmp_path / "generic_model.pkl", **{key: change})
    with pytest.raises(FlameFileError, match=message) as error:
        load_flame_file(path)
    assert str(path) in str(error.value) and str(error.value).count(". ") == 0


def _legacy_with_sparse_regressor(path, state):
    from server.flame import write_flame_file
    from server.safe_pickle import ForeignObject, ForeignPickler

    write_flame_file(path, synthetic_flame(), legacy=True)
    payload = load_pickle_plainly(path)
    payload["J_regressor"] = ForeignObject("scipy.sparse.csc", "csc_matrix", state)
    with open(path, "wb") as f:
        ForeignPickler(f, protocol=2).dump(payload)
    return path


def load_pickle_plainly(path):
    """The legacy file's dict with its chumpy and scipy records put back as markers."""
    from server.safe_pickle import ForeignObject, Stub, load_pickle

    raw = load_pickle(path)
    return {k: ForeignObject(v.stub_module, v.stub_name, v.state) if isinstance(v, Stub) else v
            for k, v in raw.items()}


def test_a_sparse_regressor_declaring_a_huge_shape_is_refused_before_densifying(tmp_path):
    state = {"_shape": (10**6, 10**6), "data": np.ones(3), "indices": np.arange(3),
             "indptr": np.array([0, 3] + [3] * 4), "format": "csc", "maxprint": 50}
    path = _legacy_with_sparse_regressor(tmp_path / "generic_model.pkl", state)
    with pytest.raises(FlameFileError, match=r"sparse 'J_regressor' matrix has shape "
                                             r"\(1000000, 1000000\), expected \(5, 300\)"):
        load_flame_file(path)
    state.update(_shape=(5, 300), indices=np.array([0, 1, 7]),
                 indptr=np.array([0, 3] + [3] * 299))
    path = _legacy_with_sparse_regressor(tmp_path / "generic_model.pkl", state)
    with pytest.raises(FlameFileError, match="has indices outside its shape"):
        load_flame_file(path)


_BOMB_RUN = """
import resource, sys, time
sys.path.insert(0, {root!r})
sys.modules["torch"] = None  # as in Blender's Python, which reads FLAME files itself
from server.flame import load_flame_file
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
try:
    load_flame_file({path!r})
    print("LOADED")
except ValueError as exc:
    print(type(exc).__name__, exc)
print(time.perf_counter() - started)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def test_a_59_byte_flame_file_asking_for_4_gb_is_refused_cheaply(tmp_path):
    import subprocess
    import sys

    from tests.builders import ROOT

    bomb = (b"\x80\x02}q\x00X\x0a\x00\x00\x00v_templateq\x01cbuiltins\nbytearray\nq\x02"
            b"\x8a\x05\x00(k\xee\x00\x85q\x03Rq\x04s.")
    assert len(bomb) == 59
    assert pickle.loads(bomb.replace(b"\x00(k\xee\x00", b"\x10\x00\x00\x00\x00"))[
        "v_template"] == bytearray(16)  # the same pickle with a small size: what it asks for
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(bomb)
    result = subprocess.run([sys.executable, "-c", _BOMB_RUN.format(root=str(ROOT),
                                                                    path=str(path))],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    message, seconds, growth_mb = result.stdout.strip().splitlines()
    assert message.startswith("UnsafeFileError") and "4,000,000,000-byte buffer" in message
    assert str(path) in message
    assert float(growth_mb) < 30 and float(seconds) < 5


# -- the official release's landmark embedding (DECA layout, pickled torch tensors) -----------

@pytest.fixture(scope="module")
def official_flame(tmp_path_factory):
    from tests.builders import write_deca_landmark_embedding, write_synthetic_flame

    geometry = tmp_path_factory.mktemp("assets") / "FLAME" / "geometry"
    geometry.mkdir(parents=True)
    flame = write_synthetic_flame(geometry / "generic_model.pkl", legacy=True)
    expected = write_deca_landmark_embedding(geometry / "landmark_embedding.npy", seed=2)
    return flame, expected


def test_the_landmark_embedding_is_read_only_when_asked(tmp_path):
    from tests.builders import write_synthetic_flame

    marker = tmp_path / "pwned"
    flame = write_synthetic_flame(tmp_path / "generic_model.pkl", legacy=True)
    np.save(tmp_path / "landmark_embedding.npy",
            np.array({"static_lmk_faces_idx": _WritesAFile(marker)}, dtype=object),
            allow_pickle=True)
    assert len(load_flame_file(flame).landmark_faces) == 0  # inference never opens it
    with pytest.raises(UnsafeFileError, match="system") as error:
        load_flame_file(flame, landmarks=True)
    assert "landmark_embedding.npy" in str(error.value)
    assert not marker.exists()


def test_deca_embedding_beside_the_flame_file_gives_its_exact_arrays(official_flame):
    from server.flame import load_landmark_embedding

    flame, expected = official_flame
    embedding = load_landmark_embedding(flame.parent / "landmark_embedding.npy")
    assert set(embedding) == set(expected)
    for key, value in expected.items():
        assert embedding[key].dtype == value.dtype and np.array_equal(embedding[key], value), key
    data = load_flame_file(flame, landmarks=True)
    assert np.array_equal(data.landmark_faces, expected["static_lmk_faces_idx"])
    assert np.array_equal(data.landmark_barycentrics, expected["static_lmk_bary_coords"])


_NO_TORCH_EMBEDDING = """
import sys
sys.path.insert(0, {root!r})
sys.modules["torch"] = None  # import torch fails here, as in Blender's Python
import numpy as np
from server.flame import load_flame_file, load_landmark_embedding
embedding = load_landmark_embedding({embedding!r})
data = load_flame_file({flame!r}, landmarks=True)
np.savez({out!r}, flame_faces=data.landmark_faces, **embedding)
"""


def test_deca_embedding_reads_where_torch_cannot_be_imported(official_flame, tmp_path):
    import subprocess
    import sys

    from tests.builders import ROOT

    flame, expected = official_flame
    code = _NO_TORCH_EMBEDDING.format(root=str(ROOT), flame=str(flame),
                                      embedding=str(flame.parent / "landmark_embedding.npy"),
                                      out=str(tmp_path / "read.npz"))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    read = np.load(tmp_path / "read.npz")
    for key, value in expected.items():
        assert read[key].dtype == value.dtype and np.array_equal(read[key], value), key
    assert np.array_equal(read["flame_faces"], expected["static_lmk_faces_idx"])


def test_a_malicious_pickle_inside_the_embedding_is_refused_naming_it(tmp_path):
    from server.flame import load_landmark_embedding

    marker = tmp_path / "pwned"
    path = tmp_path / "landmark_embedding.npy"
    np.save(path, np.array({"static_lmk_faces_idx": _WritesAFile(marker)}, dtype=object),
            allow_pickle=True)
    with pytest.raises(UnsafeFileError, match="system") as error:
        load_landmark_embedding(path)
    assert str(path) in str(error.value) and not marker.exists()


def test_generate_uses_the_official_layouts_flame_file(tmp_path, tiny_bundle, speech_wav):
    from tests.builders import run_server, write_official_release

    write_official_release(tmp_path / "assets", seed=4)
    flame = tmp_path / "assets" / "FLAME" / "geometry" / "generic_model.pkl"
    assert (flame.parent / "landmark_embedding.npy").is_file()
    out = tmp_path / "take.npz"
    result = run_server("generate", speech_wav, "--model", tiny_bundle, "--flame", flame,
                        "-o", out)
    assert result.returncode == 0, result.stderr
    take = np.load(out)
    assert take["vertices"].shape == (take["expression"].shape[0], 300, 3)
    assert np.isfinite(take["vertices"]).all()


def test_the_numpy_forward_pass_equals_smplx():
    """``flame_vertices`` (what ``generate --flame`` uses, no torch) against smplx's FLAME, on
    the synthetic file and on the demo head (whose lower face is skinned to the jaw)."""
    from server.demo.head import build_demo_head
    from server.flame import FlameModel, flame_vertices

    rng = np.random.default_rng(4)
    expression = rng.normal(0, 2, (70, 100))
    jaw = rng.normal(0, 0.2, (70, 3))
    jaw[0] = 0.0  # the rest pose too
    for data in (synthetic_flame(), build_demo_head().flame):
        ours = flame_vertices(data, expression, jaw)
        reference = FlameModel(data).vertices(expression, jaw)
        assert ours.shape == reference.shape == (70, data.n_vertices, 3)
        assert np.abs(ours - reference).max() < 1e-8
        assert np.abs(reference[1:] - reference[0]).max() > 1e-3  # the motion is visible
    with pytest.raises(ValueError, match="expression components"):
        flame_vertices(synthetic_flame(n_expression=10), expression, jaw)


def test_the_numpy_forward_pass_with_neck_and_eyes_equals_smplx():
    """The living layers' joints (neck, both eyes) posed as smplx's FLAME poses them."""
    from server.demo.head import build_demo_head
    from server.flame import FlameModel, flame_vertices

    rng = np.random.default_rng(5)
    expression = rng.normal(0, 1, (20, 100))
    jaw = rng.normal(0, 0.1, (20, 3))
    neck = rng.normal(0, 0.2, (20, 3))
    eyes = rng.normal(0, 0.3, (20, 2, 3))
    for data in (synthetic_flame(), build_demo_head().flame):
        ours = flame_vertices(data, expression, jaw, neck=neck, eyes=eyes)
        reference = FlameModel(data).vertices(expression, jaw, neck=neck, eyes=eyes)
        assert np.abs(ours - reference).max() < 1e-8
        still = flame_vertices(data, expression, jaw)
        assert np.abs(ours - still).max() > 1e-3  # the neck and eyes do move the mesh
