# SPDX-License-Identifier: GPL-3.0-or-later
"""The stage-2 renderer: gradients, projection, shading, and mouth crops at the landmarks."""

import numpy as np
import pytest
import torch

from server.train.renderer import FixedViewRenderer, mouth_crops, pose_and_project, sh_shading


def test_gradients_match_finite_differences():
    verts = torch.tensor([[-0.05, -0.08, 0.1], [0.05, -0.08, 0.1], [0.05, 0.02, 0.1],
                          [-0.05, 0.02, 0.1], [0.0, -0.01, 0.12]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]])
    renderer = FixedViewRenderer(faces, size=64)
    weights = torch.rand(1, 1, 3, 64, 64, dtype=torch.float64, generator=torch.Generator()
                         .manual_seed(0))

    def score(v):
        return (renderer(v)["image"] * weights).sum()

    v = verts[None, None].clone().requires_grad_(True)
    score(v).backward()
    numeric = torch.zeros_like(v)
    eps = 1e-6
    for i in range(5):
        for j in range(3):
            plus, minus = v.detach().clone(), v.detach().clone()
            plus[0, 0, i, j] += eps
            minus[0, 0, i, j] -= eps
            numeric[0, 0, i, j] = (score(plus) - score(minus)) / (2 * eps)
    assert numeric.abs().max() > 1.0
    assert (v.grad - numeric).abs().max() < 1e-6 * numeric.abs().max()


def test_projection_follows_the_official_camera():
    _, screen = pose_and_project(torch.zeros(1, 1, 3, dtype=torch.float64))
    assert screen[0, 0, 0] == pytest.approx(10.002211 * 0.0018661031)
    assert screen[0, 0, 1] == pytest.approx(-10.002211 * 0.030013265)
    assert screen[0, 0, 2] == pytest.approx(10.0)


def test_sh_shading_of_a_normal_along_z():
    from server.train.renderer import SH_LIGHT

    shade = sh_shading(torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    light = np.array(SH_LIGHT)
    expected = 0.2820948 * light[0] + 1.0233267 * light[3] + 0.2477080 * 2 * light[8]
    np.testing.assert_allclose(shade.numpy(), expected, rtol=1e-6)


def sphere(rings=24, segments=48, radius=0.09):
    vertices, faces = [], []
    for i in range(rings + 1):
        theta = np.pi * i / rings
        for j in range(segments):
            phi = 2 * np.pi * j / segments
            vertices.append([radius * np.sin(theta) * np.sin(phi), radius * np.cos(theta) - 0.03,
                             radius * np.sin(theta) * np.cos(phi)])
    for i in range(rings):
        for j in range(segments):
            a, b = i * segments + j, i * segments + (j + 1) % segments
            c, d = a + segments, b + segments
            faces += [[a, c, b], [b, c, d]]
    return np.array(vertices), np.array(faces)


def test_mouth_crop_lands_on_the_mouth_the_landmarks_mark():
    """A head-sized sphere whose 'mouth' (a dark patch low on the front) carries the mouth
    landmarks: the crop around them must be dark in its centre, the face around it bright."""
    vertices, faces = sphere()
    mouth_centre = np.array([0.0, -0.07, 0.0])
    front = vertices[:, 2] > 0
    near_mouth = front & (np.linalg.norm(vertices[:, :2] - mouth_centre[:2], axis=1) < 0.018)
    albedo = np.full((len(vertices), 3), 0.8)
    albedo[near_mouth] = 0.02
    # 68 landmarks as points on faces: every landmark on a face of a mouth vertex.
    mouth_faces = [f for f, face in enumerate(faces) if near_mouth[face].all()]
    landmark_faces = torch.tensor([mouth_faces[k % len(mouth_faces)] for k in range(51)])
    renderer = FixedViewRenderer(torch.tensor(faces), size=224,
                                 vertex_albedo=torch.tensor(albedo, dtype=torch.float32),
                                 landmark_faces=landmark_faces,
                                 landmark_barycentrics=torch.full((51, 3), 1 / 3))
    out = renderer(torch.tensor(vertices, dtype=torch.float32)[None, None].expand(1, 3, -1, -1))
    assert out["landmarks"].shape == (1, 3, 51, 2)
    landmarks = torch.cat([torch.zeros(1, 3, 17, 2), out["landmarks"]], dim=2)  # 68 points
    crops = mouth_crops(out["image"], landmarks)
    assert crops.shape == (1, 3, 1, 96, 96)
    centre = crops[0, 0, 0, 40:56, 40:56].mean()
    ring = crops[0, 0, 0, 4:12, :].mean()  # above the mouth: face
    assert centre < 0.2 < ring
