# SPDX-License-Identifier: GPL-3.0-or-later
"""EMOTE's stage-2 renderer in plain PyTorch: a fixed frontal orthographic camera, spherical-
harmonics Lambertian shading, and mouth crops around the projected mouth landmarks.

Rasterisation is "hard" like PyTorch3D's with blur 0: which face covers a pixel is decided
without gradients; colours are interpolated with barycentric coordinates recomputed with
gradients, so the image is differentiable with respect to the vertices inside faces.
Camera, head rotation and lighting are the fixed values of the official renderer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .geometry import rodrigues

CAMERA = (10.002211, 0.0018661031, 0.030013265)  # scale, tx, ty
HEAD_ROTATION = (0.04197937, 0.0580671, 0.02439648)  # axis-angle
SH_LIGHT = (
    (3.60173798, 3.59747148, 3.60435891),
    (3.31493653e-3, 3.47901136e-3, 1.16050988e-3),
    (4.95540239e-2, 3.33225392e-2, 2.95860935e-2),
    (-0.223113924, -0.249350727, -0.232230291),
    (4.57665697e-2, 4.61878628e-2, 4.63453270e-2),
    (-7.16504231e-2, -7.04488382e-2, -7.28791580e-2),
    (-0.100640759, -0.109357856, -0.112508349),
    (0.263972402, 0.263828635, 0.267772079),
    (0.496761084, 0.485248387, 0.489809245),
)
_PI = math.pi
SH_CONSTANTS = (
    1 / math.sqrt(4 * _PI),
    *(2 * _PI / 3 * math.sqrt(3 / (4 * _PI)),) * 3,
    *(_PI / 4 * 3 * math.sqrt(5 / (12 * _PI)),) * 3,
    _PI / 4 * 1.5 * math.sqrt(5 / (12 * _PI)),
    _PI / 4 * 0.5 * math.sqrt(5 / (4 * _PI)),
)
MOUTH = slice(48, 68)  # of the 68 landmarks; all static
STATIC_FIRST = 17  # the 51 static landmarks are 17..67


def pose_and_project(vertices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, V, 3) FLAME vertices → (posed (N, V, 3), screen (N, V, 3)).

    Posed = v·R (row vectors: the inverse of the head rotation, as the official renderer);
    screen X = s(x + tx), Y = −s(y + ty) (normalised, +X right, +Y down), Z = −s·z + 10.
    """
    rotation = rodrigues(torch.tensor([HEAD_ROTATION], dtype=vertices.dtype))[0]
    posed = vertices @ rotation.to(vertices.device)
    s, tx, ty = CAMERA
    screen = torch.stack([s * (posed[..., 0] + tx), -s * (posed[..., 1] + ty),
                          -s * posed[..., 2] + 10], dim=-1)
    return posed, screen


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted vertex normals (N, V, 3), normalised with eps 1e-6."""
    v0, v1, v2 = (vertices[:, faces[:, i]] for i in range(3))
    face_normals = torch.cross(v1 - v0, v2 - v0, dim=-1)
    normals = torch.zeros_like(vertices)
    for i in range(3):
        normals = normals.index_add(1, faces[:, i], face_normals)
    return normals / normals.norm(dim=-1, keepdim=True).clamp(min=1e-6)


def _barycentric(points: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor
                 ) -> torch.Tensor:
    """Barycentric coordinates (..., 3) of 2D ``points`` in triangles (a, b, c)."""
    v0, v1, v2 = b - a, c - a, points - a
    denominator = v0[..., 0] * v1[..., 1] - v1[..., 0] * v0[..., 1]
    safe = torch.where(denominator.abs() < 1e-12, torch.ones_like(denominator), denominator)
    w1 = (v2[..., 0] * v1[..., 1] - v1[..., 0] * v2[..., 1]) / safe
    w2 = (v0[..., 0] * v2[..., 1] - v2[..., 0] * v0[..., 1]) / safe
    return torch.stack([1 - w1 - w2, w1, w2], dim=-1)


def _face_boxes(corners: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last pixel (column, row) whose centre a face's bounding box covers."""
    to_pixel = (corners[..., :2] + 1) * size / 2 - 0.5  # centre index
    first = torch.ceil(to_pixel.amin(dim=1)).clamp(0, size - 1).long()
    last = torch.floor(to_pixel.amax(dim=1)).clamp(-1, size - 1).long()
    return first, last


def _candidates(corners: torch.Tensor, first: torch.Tensor, last: torch.Tensor, size: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every (face, pixel) pair of the faces' boxes: pixel index, depth, and inside-ness."""
    extent = last - first + 1
    width, height = int(extent[:, 0].max()), int(extent[:, 1].max())
    du = torch.arange(width, device=corners.device)
    dv = torch.arange(height, device=corners.device)
    grid_u = (first[:, 0, None, None] + du[None, None, :]).expand(-1, height, -1)
    grid_v = (first[:, 1, None, None] + dv[None, :, None]).expand(-1, -1, width)
    valid = (grid_u <= last[:, 0, None, None]) & (grid_v <= last[:, 1, None, None])
    centres = torch.stack([(2 * grid_u + 1) / size - 1, (2 * grid_v + 1) / size - 1],
                          dim=-1).to(corners.dtype)
    a, b, c = (corners[:, i, None, None, :2] for i in range(3))
    weights = _barycentric(centres, a, b, c)
    inside = valid & (weights >= -1e-7).all(dim=-1)
    depth = (weights * corners[:, None, None, :, 2]).sum(-1)
    depth = torch.where(inside, depth, torch.full_like(depth, float("inf")))
    return torch.where(valid, grid_v * size + grid_u, 0), depth, inside


def _chunks(area: torch.Tensor, budget: int) -> list[torch.Tensor]:
    """Face indices in groups whose (count × largest box) stays within ``budget`` pixels."""
    order = torch.argsort(area)
    sorted_area = area[order].clamp(min=1)
    groups, start, total = [], 0, len(order)
    while start < total:
        stop = min(total, start + max(1, budget // int(sorted_area[start])))
        while stop > start + 1 and (stop - start) * int(sorted_area[stop - 1]) > budget:
            stop = start + max(1, budget // int(sorted_area[stop - 1]))
        groups.append(order[start:stop])
        start = stop
    return groups


def rasterize(screen: torch.Tensor, faces: torch.Tensor, size: int, budget: int = 4_000_000
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest face per pixel and its barycentrics.

    ``screen`` (N, V, 3) normalised coordinates; pixel (row v, column u) has its centre at
    X = (2u + 1)/size − 1, Y = (2v + 1)/size − 1. Returns ``face`` (N, size, size) long, −1 for
    background, and ``bary`` (N, size, size, 3), differentiable with respect to ``screen``.
    Candidate (face, pixel) pairs are processed in groups of at most ``budget``, so memory
    stays bounded whatever the triangles' sizes.
    """
    n_frames = screen.shape[0]
    face_index = torch.full((n_frames, size * size), -1, dtype=torch.long, device=screen.device)
    face_ids = torch.arange(faces.shape[0], device=screen.device)
    with torch.no_grad():
        for n in range(n_frames):
            corners = screen[n, faces]  # (F, 3, 3)
            first, last = _face_boxes(corners, size)
            extent = (last - first + 1).clamp(min=0)
            area = extent[:, 0] * extent[:, 1]
            groups = _chunks(area, budget) if bool((area > 0).any()) else []
            groups = [g[area[g] > 0] for g in groups]
            groups = [g for g in groups if len(g)]
            zbuffer = torch.full((size * size,), float("inf"), dtype=screen.dtype,
                                 device=screen.device)
            for group in groups:  # pass 1: nearest depth per pixel
                pixel, depth, _ = _candidates(corners[group], first[group], last[group], size)
                zbuffer.scatter_reduce_(0, pixel.reshape(-1), depth.reshape(-1), reduce="amin")
            for group in groups:  # pass 2: which face has it
                pixel, depth, inside = _candidates(corners[group], first[group], last[group],
                                                   size)
                nearest = inside & (depth <= zbuffer[pixel])
                ids = torch.where(nearest, face_ids[group][:, None, None].expand_as(pixel), -1)
                face_index[n].scatter_reduce_(0, pixel.reshape(-1), ids.reshape(-1),
                                              reduce="amax")
    face_index = face_index.reshape(n_frames, size, size)
    # Barycentrics again, now with gradients, for the winning face of every covered pixel.
    rows = torch.arange(size, device=screen.device, dtype=screen.dtype)
    centre_x = ((2 * rows + 1) / size - 1)[None, None, :].expand(n_frames, size, size)
    centre_y = ((2 * rows + 1) / size - 1)[None, :, None].expand(n_frames, size, size)
    safe_face = face_index.clamp(min=0)
    frame = torch.arange(n_frames, device=screen.device)[:, None, None]
    tri = screen[frame[..., None], faces[safe_face]]  # (N, H, W, 3, 3)
    bary = _barycentric(torch.stack([centre_x, centre_y], dim=-1), tri[..., 0, :2],
                        tri[..., 1, :2], tri[..., 2, :2])
    bary = torch.where((face_index >= 0)[..., None], bary, torch.zeros_like(bary))
    return face_index, bary


def sh_shading(normals: torch.Tensor) -> torch.Tensor:
    """RGB shading (..., 3) of unit-ish normals (..., 3) under the fixed SH light."""
    nx, ny, nz = normals.unbind(-1)
    basis = torch.stack([torch.ones_like(nx), nx, ny, nz, nx * ny, nx * nz, ny * nz,
                         nx**2 - ny**2, 3 * nz**2 - 1], dim=-1)
    constants = torch.tensor(SH_CONSTANTS, dtype=normals.dtype, device=normals.device)
    light = torch.tensor(SH_LIGHT, dtype=normals.dtype, device=normals.device)
    return (basis * constants) @ light


class FixedViewRenderer(nn.Module):
    """FLAME vertices (B, T, V, 3) → RGB images (B, T, 3, size, size) and mouth landmarks."""

    def __init__(self, faces: torch.Tensor, size: int = 224,
                 vertex_albedo: torch.Tensor | None = None,
                 landmark_faces: torch.Tensor | None = None,
                 landmark_barycentrics: torch.Tensor | None = None) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("faces", faces.long())
        self.register_buffer("albedo", vertex_albedo if vertex_albedo is not None else
                             torch.empty(0))
        self.register_buffer("landmark_faces", landmark_faces.long() if landmark_faces is not None
                             else torch.empty(0, dtype=torch.long))
        self.register_buffer("landmark_barycentrics", landmark_barycentrics
                             if landmark_barycentrics is not None else torch.empty(0, 3))

    def forward(self, vertices: torch.Tensor) -> dict[str, torch.Tensor]:
        batch, frames = vertices.shape[:2]
        flat = vertices.reshape(batch * frames, *vertices.shape[2:])
        posed, screen = pose_and_project(flat)
        face, bary = rasterize(screen, self.faces, self.size)
        corners = self.faces[face.clamp(min=0)]  # (N, H, W, 3)
        frame = torch.arange(len(flat), device=flat.device)[:, None, None, None]
        normals = vertex_normals(posed, self.faces)[frame, corners]  # (N, H, W, 3, 3)
        normal = (bary[..., None] * normals).sum(-2)
        if self.albedo.numel():
            albedo = (bary[..., None] * self.albedo[corners]).sum(-2)
        else:
            albedo = torch.full_like(normal, 0.7)
        alpha = (face >= 0)[..., None].to(flat.dtype)
        image = albedo * sh_shading(normal) * alpha  # not clamped, black background
        out = {"image": image.permute(0, 3, 1, 2).reshape(batch, frames, 3, self.size,
                                                           self.size),
               "alpha": alpha[..., 0].reshape(batch, frames, self.size, self.size)}
        if self.landmark_faces.numel():
            tri = screen[:, self.faces[self.landmark_faces]]  # (N, L, 3, 3)
            points = (self.landmark_barycentrics[None, :, :, None] * tri).sum(2)[..., :2]
            out["landmarks"] = points.reshape(batch, frames, -1, 2)
        return out


def mouth_crops(images: torch.Tensor, landmarks: torch.Tensor, size: int = 96,
                window: int = 12) -> torch.Tensor:
    """Grey 96×96 crops around the mouth (B, T, 1, 96, 96), the official recipe.

    ``landmarks`` (B, T, 68, 2) normalised. The crop centre follows the mouth landmarks after a
    12-frame box filter (re-centred on each frame's raw landmarks); sampling is bicubic.
    """
    batch, frames, _, height, width = images.shape
    half = width / 2
    with torch.no_grad():
        pixels = landmarks * half + half
        padded = torch.cat([pixels[:, :1].expand(-1, window // 2, -1, -1), pixels,
                            pixels[:, -1:].expand(-1, window // 2, -1, -1)], dim=1)
        smoothed = torch.stack([padded[:, t: t + window].mean(1) for t in range(frames)], 1)
        smoothed = smoothed + pixels.mean(2, keepdim=True) - smoothed.mean(2, keepdim=True)
        centre = smoothed[:, :, MOUTH].mean(2)  # (B, T, 2)
        offsets = torch.linspace(-size / 2, size / 2, size, dtype=images.dtype,
                                 device=images.device) / half
        grid_y, grid_x = torch.meshgrid(offsets, offsets, indexing="ij")
        grid = torch.stack([grid_x, grid_y], -1)[None, None]  # (1, 1, 96, 96, 2)
        grid = grid + ((centre - half) / half)[:, :, None, None, :]
    grey = (0.2989 * images[:, :, 0] + 0.587 * images[:, :, 1] + 0.114 * images[:, :, 2])
    crops = F.grid_sample(grey.reshape(batch * frames, 1, height, width),
                          grid.reshape(batch * frames, size, size, 2), mode="bicubic",
                          align_corners=True, padding_mode="zeros")
    return crops.reshape(batch, frames, 1, size, size)
