# SPDX-License-Identifier: GPL-3.0-or-later
"""Small synthetic stand-ins the tests build themselves: FLAME files, audio, random models laid
out as our bundles or exactly like the official EMOTE v2 release."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile
import torch
import yaml

from server.checkpoints import save_bundle
from server.flame import FlameData, write_flame_file
from server.models.emote import EmoteConfig, EmoteModel
from server.models.flint import FlintConfig
from server.safe_pickle import ForeignClass, ForeignObject, foreign_pickle_module

ROOT = Path(__file__).resolve().parents[1]


def run_server(*args, cwd: Path | None = None, timeout: float = 300
               ) -> subprocess.CompletedProcess:
    """``python -m server ARGS`` as a user runs it: a real subprocess, offline, output captured."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "server", *map(str, args)], cwd=cwd or ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)

TINY_WAV2VEC2 = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    conv_dim=[32] * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
)


def tiny_config(**overrides) -> EmoteConfig:
    """Full EMOTE topology (8 heads, 43-d condition, FLINT 103 ↔ 1/8) at tiny widths."""
    config = EmoteConfig(
        wav2vec2=dict(TINY_WAV2VEC2), feature_dim=16, n_heads=8, dim_feedforward=32,
        flint=FlintConfig(feature_dim=16, latent_dim=16, n_heads=8, dim_feedforward=24),
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def random_model(config: EmoteConfig | None = None, seed: int = 0) -> EmoteModel:
    """A seeded random model with non-trivial BatchNorm statistics and visible outputs."""
    torch.manual_seed(seed)
    model = EmoteModel(config or tiny_config())
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.normal_(0, 0.3)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.num_batches_tracked.fill_(1234)
        # Official FLINT zero-initialises this layer; give it weights so the output varies.
        decoder = model.sequence_decoder.motion_prior.motion_decoder
        decoder.post_transformer_linear.weight.normal_(0, 0.3)
        decoder.cross_smooth_layer.weight.mul_(4.0)
    return model.eval()


def write_bundle(folder: Path, seed: int = 0, config: EmoteConfig | None = None) -> Path:
    return save_bundle(folder, random_model(config, seed), flint_source="random test FLINT")


def speech_like(seconds: float, rate: int = 16_000, seed: int = 0, channels: int = 1
                ) -> np.ndarray:
    """Deterministic voiced/unvoiced bursts with a moving pitch: audio that varies like speech."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * 3.1 * t + rng.uniform(0, 6)), 0, None) ** 2
    noise = rng.normal(0, 0.05, t.shape) * (1 - envelope)
    wave = 0.3 * voiced * envelope + noise
    wave = (0.8 * wave / np.abs(wave).max()).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def write_wav(path: Path, seconds: float, rate: int = 16_000, seed: int = 0,
              channels: int = 1, fmt: str | None = None) -> Path:
    soundfile.write(str(path), speech_like(seconds, rate, seed, channels), rate, format=fmt)
    return path


def synthetic_flame(n_vertices: int = 300, n_expression: int = 100, seed: int = 0) -> FlameData:
    """A small head-like FLAME: a closed ellipsoid (15 rings × 20 segments = 300 vertices, a
    proper triangle mesh), the same keys and joint tree as FLAME, random smooth bases."""
    rng = np.random.default_rng(seed)
    rings, segments = 15, n_vertices // 15
    theta = np.repeat(np.linspace(0.15, np.pi - 0.15, rings), segments)
    phi = np.tile(np.linspace(0, 2 * np.pi, segments, endpoint=False), rings)
    v = np.stack([0.08 * np.sin(theta) * np.sin(phi), 0.11 * np.cos(theta),
                  0.09 * np.sin(theta) * np.cos(phi)], axis=1) + [0, 0.02, 0]
    v += rng.normal(0, 1e-4, v.shape)
    faces = []
    for i in range(rings - 1):
        for j in range(segments):
            a, b = i * segments + j, i * segments + (j + 1) % segments
            faces += [[a, a + segments, b], [b, a + segments, b + segments]]
    faces = np.array(faces)
    joints = np.array([[0, -0.08, -0.02], [0, -0.05, -0.02], [0, -0.02, 0.0],
                       [0.03, 0.03, 0.07], [-0.03, 0.03, 0.07]])
    j_regressor = np.zeros((5, n_vertices))
    for j, p in enumerate(joints):  # each joint: a weighted mean of its nearest vertices
        near = np.argsort(np.linalg.norm(v - p, axis=1))[:8]
        j_regressor[j, near] = 1.0 / 8
    j_regressor[:, :] = j_regressor  # dense here; written as scipy sparse
    weights = np.zeros((n_vertices, 5))
    lower = v[:, 1] < 0.0
    weights[:, 1] = 0.3
    weights[lower, 2] = 0.7
    weights[~lower, 0] = 0.7
    shapedirs = rng.normal(0, 1e-3, (n_vertices, 3, 300 + n_expression))
    posedirs = rng.normal(0, 1e-3, (n_vertices, 3, 36))
    kintree = np.array([[2**32 - 1, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64)
    return FlameData(v_template=v, faces=faces, shapedirs=shapedirs, posedirs=posedirs,
                     j_regressor=j_regressor, weights=weights, kintree_table=kintree)


def write_synthetic_flame(path: Path, legacy: bool = False, seed: int = 0) -> Path:
    write_flame_file(path, synthetic_flame(seed=seed), legacy=legacy)
    return path


def write_damaged_flame(path: Path, damage: str) -> Path:
    """A FLAME file that must be refused: ``"face-minus-one"`` (a face indexes vertex -1),
    ``"nan-vertices"`` (NaN in v_template) or ``"bomb"`` (59 bytes asking for a 4 GB
    ``bytearray`` as v_template)."""
    if damage == "bomb":
        path.write_bytes(b"\x80\x02}q\x00X\x0a\x00\x00\x00v_templateq\x01cbuiltins\nbytearray\n"
                         b"q\x02\x8a\x05\x00(k\xee\x00\x85q\x03Rq\x04s.")
        return path
    data = synthetic_flame()
    faces, v_template = data.faces.copy(), data.v_template.copy()
    if damage == "face-minus-one":
        faces[7, 2] = -1
    elif damage == "nan-vertices":
        v_template[11, 0] = np.nan
    else:
        raise ValueError(f"unknown damage {damage!r}")
    payload = {"v_template": v_template, "f": faces, "shapedirs": data.shapedirs,
               "posedirs": data.posedirs, "J_regressor": data.j_regressor,
               "weights": data.weights, "kintree_table": data.kintree_table}
    with open(path, "wb") as f:
        pickle.dump(payload, f, protocol=2)
    return path


def write_deca_landmark_embedding(path: Path, n_faces: int | None = None, seed: int = 0
                                  ) -> dict[str, np.ndarray]:
    """``landmark_embedding.npy`` in the DECA/EMOCA layout: a 0-d object array holding a dict
    whose dynamic (contour) entries are real pickled torch tensors and the rest NumPy arrays.
    Returns every entry as the NumPy array it holds."""
    n_faces = n_faces or len(synthetic_flame().faces)
    rng = np.random.default_rng(seed)

    def barycentrics(*shape: int) -> np.ndarray:
        weights = rng.random((*shape, 3)) + 0.05
        return weights / weights.sum(-1, keepdims=True)

    arrays = {
        "static_lmk_faces_idx": rng.integers(0, n_faces, 51).astype(np.int64),
        "static_lmk_bary_coords": barycentrics(51),
        "dynamic_lmk_faces_idx": rng.integers(0, n_faces, (79, 17)).astype(np.int64),
        "dynamic_lmk_bary_coords": barycentrics(79, 17).astype(np.float32),
        "full_lmk_faces_idx": rng.integers(0, n_faces, (1, 68)).astype(np.int64),
        "full_lmk_bary_coords": barycentrics(1, 68),
    }
    stored = {k: torch.tensor(v) if k.startswith("dynamic") else v for k, v in arrays.items()}
    np.save(path, np.array(stored, dtype=object), allow_pickle=True)
    return arrays


# -- the official release layout ---------------------------------------------------------------

def official_state_dict(model: EmoteModel) -> dict[str, torch.Tensor]:
    """Our model's weights under the official key names (old weight_g/weight_v names), plus the
    extras the official checkpoint carries (renderer and FLAME buffers)."""
    state = {}
    for key, value in model.state_dict().items():
        key = key.replace(".parametrizations.weight.original0", ".weight_g")
        key = key.replace(".parametrizations.weight.original1", ".weight_v")
        state[key] = value.clone()
    state["renderer.render.uvcoords"] = torch.rand(1, 10, 3)
    state["sequence_decoder.flame.v_template"] = torch.rand(30, 3)
    state["sequence_decoder.flame.shapedirs"] = torch.rand(30, 3, 4)
    return state


def lightning_checkpoint(state: dict[str, torch.Tensor], cfg: dict) -> dict:
    """A PyTorch-Lightning style dict with the non-tensor extras real checkpoints carry."""
    return {
        "epoch": 41, "global_step": 123456, "pytorch-lightning_version": "1.4.9",
        "state_dict": state,
        "hyper_parameters": ForeignObject(
            "pytorch_lightning.utilities.parsing", "AttributeDict",
            {"cfg": ForeignObject("omegaconf.dictconfig", "DictConfig", {"_content": cfg})}),
        "callbacks": {ForeignClass("pytorch_lightning.callbacks.model_checkpoint",
                                   "ModelCheckpoint"): {"best_model_score": torch.tensor(0.1)}},
        "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(3)}},
                              "param_groups": [{"lr": 1e-4}]}],
        "lr_schedulers": [],
    }


def emote_cfg(config: EmoteConfig, specifier: str, prior_path: str) -> dict:
    return {
        "model": {
            "audio": {"type": "wav2vec2", "model_specifier": specifier, "trainable": False,
                      "with_processor": True, "model_expected_fps": 50, "target_fps": 25},
            "sequence_encoder": {"type": "linear", "feature_dim": config.feature_dim},
            "sequence_decoder": {
                "type": "BertPriorDecoder", "num_layers": config.num_layers,
                "feature_dim": config.feature_dim, "nhead": config.n_heads, "dropout": 0.25,
                "activation": "gelu", "max_len": 600, "period": config.period,
                "squash_before": False, "squash_after": True, "squash_type": "stack_linear",
                "positional_encoding": {"type": "none"},
                "temporal_bias_type": "faceformer_future", "style_op": "cat",
                "style_embedding": {
                    "type": "emotion_linear", "use_shape": False, "use_expression": False,
                    "gt_expression_label": True, "n_expression": 8,
                    "gt_expression_intensity": True, "n_intensities": 3,
                    "gt_expression_identity": True, "n_identities": len(config.styles),
                    "use_bias": True},
                "motion_prior": {"path": prior_path, "trainable": False},
                "flame": {"n_shape": 300, "n_exp": 100},
                "post_bug_fix": True,
            },
        },
        "inout": {"checkpoint_dir": "TalkingHead/models/EMOTE_v2/checkpoints"},
    }


def flint_cfg(flint: FlintConfig) -> dict:
    return {
        "model": {
            "pl_module_class": "L2lVqVae",
            "sequence_components": {"exp": 100, "jaw": "rot"},
            "rotation_representation": "aa",
            "sizes": {"quant_factor": flint.quant_factor},
            "sequence_encoder": {"type": "L2lEncoderWithGaussianHead",
                                 "feature_dim": flint.feature_dim,
                                 "intermediate_size": flint.dim_feedforward,
                                 "nhead": flint.n_heads, "num_layers": flint.num_layers},
            "sequence_decoder": {"type": "L2lDecoder", "feature_dim": flint.feature_dim,
                                 "intermediate_size": flint.dim_feedforward,
                                 "nhead": flint.n_heads, "num_layers": flint.num_layers},
        },
        "learning": {"batching": {"sequence_length_train": 32}},
    }


def write_official_release(assets: Path, seed: int = 0, config: EmoteConfig | None = None,
                           decoder_in_emote: bool = True) -> tuple[Path, EmoteModel]:
    """``assets/TalkingHead/models/EMOTE_v2`` + ``assets/MotionPrior/models/FLINTv2`` laid out
    like the official download, from a seeded random model, with the synthetic FLAME as
    ``assets/FLAME/geometry/generic_model.pkl`` (legacy pickling) and a DECA-layout
    ``landmark_embedding.npy`` beside it. Returns (EMOTE folder, model)."""
    config = config or tiny_config()
    model = random_model(config, seed)
    emote = assets / "TalkingHead" / "models" / "EMOTE_v2"
    flint = assets / "MotionPrior" / "models" / "FLINTv2"
    (emote / "checkpoints").mkdir(parents=True)
    audio_cfg = assets / "wav2vec2-tiny"
    audio_cfg.mkdir(parents=True)
    (audio_cfg / "config.json").write_text(json.dumps(
        {"architectures": ["Wav2Vec2ForCTC"], "model_type": "wav2vec2", **config.wav2vec2}))
    (emote / "cfg.yaml").write_text(yaml.safe_dump(
        emote_cfg(config, "wav2vec2-tiny", "MotionPrior/models/FLINTv2")))
    (flint / "cfg.yaml").parent.mkdir(parents=True)
    (flint / "cfg.yaml").write_text(yaml.safe_dump(flint_cfg(config.flint)))
    geometry = assets / "FLAME" / "geometry"
    geometry.mkdir(parents=True)
    write_synthetic_flame(geometry / "generic_model.pkl", legacy=True)
    write_deca_landmark_embedding(geometry / "landmark_embedding.npy", seed=seed)

    state = official_state_dict(model)
    decoder_prefix = "sequence_decoder.motion_prior.motion_decoder."
    flint_state = {"motion_decoder." + k[len(decoder_prefix):]: v
                   for k, v in state.items() if k.startswith(decoder_prefix)}
    torch.manual_seed(seed + 1)
    from server.models.flint import Flint

    encoder = Flint(config.flint).motion_encoder
    flint_state.update({"motion_encoder." + k: v for k, v in encoder.state_dict().items()})
    if not decoder_in_emote:
        state = {k: v for k, v in state.items() if not k.startswith(decoder_prefix)}
    torch.save(lightning_checkpoint(state, emote_cfg(config, "x", "y")),
               emote / "checkpoints" / "last.ckpt", pickle_module=foreign_pickle_module)
    # Several FLINT checkpoints: the official rule picks the smallest validation loss.
    best = flint / "checkpoints" / "model-epoch=0120-val" / "loss_total=0.0123.ckpt"
    worse = flint / "checkpoints" / "model-epoch=0080-val" / "loss_total=0.0456.ckpt"
    for path in (best, worse, flint / "checkpoints" / "last.ckpt"):
        path.parent.mkdir(parents=True, exist_ok=True)
        weights = flint_state if path == best else {
            k: torch.randn_like(v.float()).to(v.dtype) for k, v in flint_state.items()}
        torch.save(lightning_checkpoint(weights, flint_cfg(config.flint)), path,
                   pickle_module=foreign_pickle_module)
    return emote, model


# -- training data -----------------------------------------------------------------------------

def write_training_dataset(folder: Path, sequences: int = 8, seconds: float = 3.0,
                           identities: tuple[str, ...] = ("M003", "W009")) -> Path:
    """Sequences whose jaw and first expressions follow the audio envelope, so a model can
    learn lip-sync from them; the emotion adds a constant offset to other expressions."""
    from server.train.data import write_index, write_sequence

    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(sequences):
        audio = speech_like(seconds, seed=100 + i)
        frames = len(audio) // 640
        energy = np.sqrt(np.mean(audio[: frames * 640].reshape(frames, 640) ** 2, axis=1))
        energy = energy / energy.max()
        emotion = i % 8
        expression = np.zeros((frames, 100), np.float32)
        expression[:, 0] = 2.0 * energy
        expression[:, 1] = -1.0 * energy
        expression[:, 2 + emotion] = 1.0  # the emotion's signature
        jaw = np.zeros((frames, 3), np.float32)
        jaw[:, 0] = 0.25 * energy
        entry = write_sequence(folder / f"seq{i:02d}.npz", audio, expression, jaw,
                               emotion=emotion, intensity=1 + i % 3,
                               identity=identities[i % len(identities)])
        entry["split"] = "val" if i == sequences - 1 else "train"
        entries.append(entry)
    write_index(folder, entries, list(identities))
    return folder


def write_overflowing_bundle(folder: Path, seed: int = 0) -> Path:
    """A bundle whose weights are finite but so large (1e38, near float32's limit) that every
    take overflows to infinity and NaN: a broken model the checks after generation catch."""
    model = random_model(seed=seed)
    with torch.no_grad():
        model.sequence_decoder.motion_prior.motion_decoder.post_transformer_linear.weight.fill_(
            1e38)
    return save_bundle(folder, model, flint_source="overflowing test FLINT")
