# SPDX-License-Identifier: GPL-3.0-or-later
"""Runs ``python -m server generate`` end to end on a small random-weight model.

Writes into ``out/demo/``: the model bundle, a spoken sentence (espeak-ng when installed,
otherwise a synthetic voiced signal), and two takes (Happy strong, Sad mild) as ``.npz``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SENTENCE = "The quick brown fox jumps over the lazy dog, and then it takes a well earned nap."


def speech(path: Path) -> str:
    espeak = shutil.which("espeak-ng")
    if espeak:
        subprocess.run([espeak, "-w", str(path), SENTENCE], check=True)
        return f"espeak-ng: \"{SENTENCE}\""
    import soundfile

    rate = 16_000
    t = np.arange(4 * rate) / rate
    voiced = sum(np.sin(2 * np.pi * k * (140 + 30 * np.sin(2 * np.pi * 0.5 * t)) * t) / k
                 for k in range(1, 6))
    envelope = np.clip(np.sin(2 * np.pi * 3 * t), 0, None) ** 2
    soundfile.write(str(path), (0.3 * voiced * envelope).astype(np.float32), rate)
    return "a synthetic voiced signal (install espeak-ng for real speech)"


def main() -> None:
    import torch

    from server.checkpoints import save_bundle
    from server.models.emote import EmoteConfig, EmoteModel
    from server.models.flint import FlintConfig

    out = ROOT / "out" / "demo"
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = EmoteConfig(
        wav2vec2=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=128, conv_dim=[64] * 7, num_conv_pos_embeddings=32,
                      num_conv_pos_embedding_groups=4),
        feature_dim=32, dim_feedforward=64,
        flint=FlintConfig(feature_dim=32, latent_dim=32, dim_feedforward=96))
    model_dir = save_bundle(out / "tiny-random-model", EmoteModel(config).eval(),
                            flint_source="random (demo)",
                            extra={"notes": ["Random weights: for trying the pipeline only."]})
    wav = out / "sentence.wav"
    print(f"speech: {speech(wav)}")
    for emotion, intensity in (("Happy", "strong"), ("Sad", "mild")):
        target = out / f"sentence_{emotion}.npz"
        subprocess.run([sys.executable, "-m", "server", "generate", str(wav), "--model",
                        str(model_dir), "--emotion", emotion, "--intensity", intensity,
                        "-o", str(target)], check=True, cwd=ROOT)
        take = np.load(target)
        print(f"  {target.relative_to(ROOT)}: expression {take['expression'].shape}, "
              f"jaw {take['jaw'].shape} at {int(take['fps'])} fps")
    print(f"Done. Files are in {out.relative_to(ROOT)}/ (random weights: the motion is noise).")


if __name__ == "__main__":
    main()
