# SPDX-License-Identifier: GPL-3.0-or-later
"""FLAME files read inside Blender's own Python, which has NumPy but no torch: the official
download's layout makes a head; damaged and hostile files make none, and cost no memory."""

from __future__ import annotations

import importlib
import importlib.util
import resource

import bpy
import numpy as np
import pytest

from tests.blender.conftest import MODULE


def _official(fixtures):
    return fixtures / "official" / "FLAME" / "geometry" / "generic_model.pkl"


def test_blenders_python_has_no_torch():
    assert importlib.util.find_spec("torch") is None  # what the add-on runs with


def test_create_flame_head_from_the_official_layout(clean, fixtures):
    flame = _official(fixtures)
    assert (flame.parent / "landmark_embedding.npy").is_file()  # DECA's, with torch tensors
    assert bpy.ops.emote.create_flame_head(filepath=str(flame)) == {"FINISHED"}
    mesh = bpy.context.view_layer.objects.active
    assert mesh.name.startswith("FLAME") and mesh.parent is not None
    keys = mesh.data.shape_keys.key_blocks
    assert keys.get("Exp1") is not None and keys.get("Exp100") is not None
    co = np.zeros(len(mesh.data.vertices) * 3, np.float32)
    mesh.data.vertices.foreach_get("co", co)
    expected = np.load(fixtures / "official" / "expected.npz")["v_template"]
    np.testing.assert_allclose(co.reshape(-1, 3), expected, atol=1e-7)


def test_the_official_embedding_reads_without_torch(addon, fixtures):
    flame_module = importlib.import_module(f"{MODULE}.server.flame")
    path = _official(fixtures).parent / "landmark_embedding.npy"
    embedding = flame_module.load_landmark_embedding(path)
    expected = np.load(fixtures / "official" / "expected.npz")
    for key in ("static_lmk_faces_idx", "static_lmk_bary_coords", "dynamic_lmk_faces_idx",
                "dynamic_lmk_bary_coords", "full_lmk_faces_idx", "full_lmk_bary_coords"):
        assert embedding[key].dtype == expected[key].dtype, key
        assert np.array_equal(embedding[key], expected[key]), key
    data = flame_module.load_flame_file(_official(fixtures), landmarks=True)
    assert np.array_equal(data.landmark_faces, expected["static_lmk_faces_idx"])


@pytest.mark.parametrize("damage, message", [
    ("face-minus-one", "its faces do not index its 300 vertices"),
    ("nan-vertices", "its 'v_template' holds NaN or infinite values"),
    ("bomb", "asks for a 4,000,000,000-byte buffer that is not in the file"),
])
def test_damaged_or_hostile_flame_files_make_no_head(clean, fixtures, damage, message):
    path = fixtures / f"flame_{damage}.pkl"
    objects, meshes = len(bpy.data.objects), len(bpy.data.meshes)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(RuntimeError, match=message):
        bpy.ops.emote.create_flame_head(filepath=str(path))
    growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024
    assert growth_mb < 50, f"Blender grew by {growth_mb:.0f} MB reading {path.name}"
    assert (len(bpy.data.objects), len(bpy.data.meshes)) == (objects, meshes)
