# SPDX-License-Identifier: GPL-3.0-or-later
"""``python -m tests.make_fixtures OUT``: the torch-side files the Blender tests need (run with
the worker venv): a tiny model bundle, a tiny model in the official release's layout,
synthetic FLAME files in both conventions' layouts, speech, the official release's FLAME folder
(with DECA's landmark embedding) and FLAME files that must be refused.
``python -m tests.make_fixtures --forward FLAME IN.npz OUT.npz``: FLAME vertices for
(expression, jaw) rows, the geometric reference."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def make(out: Path) -> None:
    from tests import builders

    out.mkdir(parents=True, exist_ok=True)
    builders.write_bundle(out / "bundle", seed=3)
    # A model laid out exactly as the official EMOTE v2 download (Lightning checkpoints, cfg.yaml,
    # FLINT found from the config), tiny sizes.
    builders.write_official_release(out / "release", seed=4)
    builders.write_synthetic_flame(out / "flame.pkl")
    builders.write_synthetic_flame(out / "flame_legacy.pkl", legacy=True)
    # The official download's FLAME folder: generic_model.pkl beside DECA's embedding, whose
    # contour entries are pickled torch tensors; what the files hold, for comparison.
    geometry = out / "official" / "FLAME" / "geometry"
    geometry.mkdir(parents=True, exist_ok=True)
    builders.write_synthetic_flame(geometry / "generic_model.pkl", legacy=True)
    embedding = builders.write_deca_landmark_embedding(geometry / "landmark_embedding.npy", seed=6)
    np.savez(out / "official" / "expected.npz", v_template=builders.synthetic_flame().v_template,
             **embedding)
    for damage in ("face-minus-one", "nan-vertices", "bomb"):
        builders.write_damaged_flame(out / f"flame_{damage}.pkl", damage)
    builders.write_wav(out / "speech.wav", 4.0, seed=5)
    builders.write_wav(out / "long.wav", 1200.0, seed=7)  # long enough to cancel or kill


def forward(flame: Path, inputs: Path, output: Path) -> None:
    from server.flame import FlameModel, load_flame_file

    data = np.load(inputs)
    flame_data = load_flame_file(flame)
    if "neck" in data or "eyes" in data:  # the living layers: the NumPy forward pass
        from server.flame import flame_vertices

        np.save(output, flame_vertices(flame_data, data["expression"], data["jaw"],
                                       neck=data.get("neck"), eyes=data.get("eyes")))
        return
    model = FlameModel(flame_data)
    np.save(output, model.vertices(data["expression"], data["jaw"]))


if __name__ == "__main__":
    if sys.argv[1] == "--forward":
        forward(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
    else:
        make(Path(sys.argv[1]))
