# SPDX-License-Identifier: GPL-3.0-or-later
"""``python -m server train flint|stage1|stage2 --config CONFIG.yaml``: one config, one GPU or
many.

Config keys (YAML): ``data`` (dataset folder), ``flame`` (FLAME file), ``out`` (run folder:
checkpoints, CSV/TensorBoard logs, and the exported bundle in ``out/bundle``), ``flint`` /
``model`` (FlintConfig / EmoteConfig overrides), ``flint_bundle`` (stage 1: the trained FLINT),
``window`` (frames; default 32 for FLINT, 64 for stage 1), ``batch_size`` (32 / 4), ``lr``
(1e-4), ``max_steps``, ``val_every`` (steps), ``accelerator`` (auto|cpu|gpu), ``devices``,
``num_nodes``, ``strategy`` (auto|ddp|…), ``seed``, ``resume`` (a checkpoint to continue from),
``windows_per_epoch``, ``num_workers``, ``gradient_clip`` (norm; default none),
``train_audio_cnn`` (stage 1: also train wav2vec2's CNN, for a wav2vec2 trained from scratch;
default false as in EMOTE), ``loss_scale`` (stage 1: multiplies the training loss; default 1 as
in EMOTE, but vertex errors are around 1e-7 m², so unscaled, most gradients sit below Adam's
epsilon and learn slowly; 1e6, FLINT's vertex weight, avoids that), ``phone_weight`` (stage 1:
weight of a phone-recognition cross-entropy on the audio features, for a wav2vec2 trained from
scratch; default 0; needs a dataset with per-frame ``phones``), ``lr_schedule`` (``constant``,
EMOTE's and the default, or ``cosine``: decays to 2 % of ``lr`` at ``max_steps``),
``kl_weight`` (FLINT: the KL term's weight against vertex MSE × 1e6; default 1e-3 as in EMOTE).
Stage 2 also needs ``stage1_bundle`` and the perceptual networks' released files ``lip_reader``
(LRS3_V_WER32.3 ``model.pth``), ``emotion_cnn`` (the ResNet-50 emotion ``.ckpt``) and
``video_emotion`` (the video emotion classifier ``.ckpt``), and FLAME's ``landmark_embedding``
(default: beside the FLAME file); ``loss_weights`` overrides the weights (vertex, lip, emotion,
lip_exchanged, emotion_exchanged). References are renders of the pseudo ground truth (reading
aligned real video is not supported yet).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DEFAULTS = {
    "flint": {"window": 32, "batch_size": 32},
    "stage1": {"window": 64, "batch_size": 4},
    "stage2": {"window": 64, "batch_size": 4},
}
LR_SCHEDULES = ("constant", "cosine")
STAGE_FILES = {
    "flint": (),
    "stage1": ("flint_bundle",),
    "stage2": ("stage1_bundle", "lip_reader", "emotion_cnn", "video_emotion"),
}


def read_config(path: Path, stage: str) -> dict[str, Any]:
    try:
        config = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"Could not read the training config '{path}': {exc}") from exc
    base = Path(path).resolve().parent
    merged = {"lr": 1e-4, "max_steps": 1000, "val_every": 200, "accelerator": "auto",
              "devices": 1, "num_nodes": 1, "strategy": "auto", "seed": 0,
              "num_workers": 0, **DEFAULTS[stage], **config}
    for key in ("data", "flame", "out", "resume", "landmark_embedding", "flint_bundle",
                "stage1_bundle", "lip_reader", "emotion_cnn", "video_emotion"):
        if merged.get(key):
            merged[key] = str((base / merged[key]).resolve()) if not Path(
                merged[key]).is_absolute() else merged[key]
    missing = [k for k in ("data", "flame", "out") + STAGE_FILES[stage] if not merged.get(k)]
    if missing:
        raise ValueError(f"The training config lacks: {', '.join(missing)}.")
    if merged.setdefault("lr_schedule", "constant") not in LR_SCHEDULES:
        raise ValueError(f"Unknown lr_schedule '{merged['lr_schedule']}': use "
                         f"{' or '.join(LR_SCHEDULES)}.")
    return merged


def train(stage: str, config_path: Path) -> Path:
    """Train ``stage`` from the config; returns the exported bundle folder."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader

    from ..checkpoints import load_flint_bundle, save_bundle, save_flint_bundle
    from ..flame import load_flame_file
    from ..models.emote import EmoteConfig
    from ..models.flint import FlintConfig
    from .data import SequenceWindows
    from .geometry import FlameVertices
    from .modules import EmoteStage1, FlintModule

    config = read_config(config_path, stage)
    L.seed_everything(int(config["seed"]), workers=True)
    out = Path(config["out"])
    flame = load_flame_file(config["flame"], config.get("landmark_embedding"), landmarks=True)
    vertices = FlameVertices(flame)
    motion_only = stage == "flint"
    train_set = SequenceWindows(config["data"], "train", int(config["window"]),
                                seed=int(config["seed"]), motion_only=motion_only,
                                windows_per_epoch=config.get("windows_per_epoch"))
    phone_weight = float(config.get("phone_weight", 0.0))
    if phone_weight and not train_set.phone_set:
        raise ValueError(f"phone_weight needs per-frame phone labels, and the dataset "
                         f"'{config['data']}' lists no phones in its index.json.")
    try:
        val_set = SequenceWindows(config["data"], "val", int(config["window"]),
                                  seed=int(config["seed"]) + 1, motion_only=motion_only)
    except ValueError:
        val_set = None
    if stage == "flint":
        flint_config = FlintConfig.from_dict(config.get("flint", {}))
        module: L.LightningModule = FlintModule(flint_config, vertices, lr=float(config["lr"]),
                                                kl_weight=float(config.get("kl_weight", 1e-3)))
    elif stage == "stage2":
        module = _stage2_module(config, flame, vertices)
    else:
        flint = load_flint_bundle(config["flint_bundle"])
        overrides = dict(config.get("model", {}))
        overrides["flint"] = flint.config.to_dict()
        overrides.setdefault("styles", train_set.identities)
        emote_config = EmoteConfig.from_dict(overrides)
        if emote_config.condition_dim != train_set.condition_dim:
            raise ValueError(f"The model expects {emote_config.condition_dim} condition numbers;"
                             f" the dataset gives {train_set.condition_dim}.")
        module = EmoteStage1(emote_config, flint, vertices, lr=float(config["lr"]),
                             train_audio_cnn=bool(config.get("train_audio_cnn", False)),
                             loss_scale=float(config.get("loss_scale", 1.0)),
                             phone_classes=len(train_set.phone_set) if phone_weight else 0,
                             phone_weight=phone_weight)

    module.lr_schedule, module.total_steps = config["lr_schedule"], int(config["max_steps"])
    loaders = {
        "train_dataloaders": DataLoader(train_set, batch_size=int(config["batch_size"]),
                                        shuffle=True, num_workers=int(config["num_workers"]),
                                        drop_last=len(train_set) >= int(config["batch_size"])),
    }
    if val_set is not None:
        loaders["val_dataloaders"] = DataLoader(val_set, batch_size=int(config["batch_size"]),
                                                num_workers=int(config["num_workers"]))
    loggers: list[Any] = [CSVLogger(str(out), name="logs")]
    try:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(str(out), name="tensorboard"))
    except (ImportError, ModuleNotFoundError):
        pass
    validation = {"val_check_interval": int(config["val_every"]),
                  "check_val_every_n_epoch": None} if val_set is not None else {}
    trainer = L.Trainer(
        max_steps=int(config["max_steps"]), accelerator=config["accelerator"],
        devices=config["devices"], num_nodes=int(config["num_nodes"]),
        strategy=config["strategy"], default_root_dir=str(out), logger=loggers,
        callbacks=[ModelCheckpoint(dirpath=str(out / "checkpoints"), save_last=True)],
        log_every_n_steps=1, deterministic=True, enable_progress_bar=True,
        gradient_clip_val=config.get("gradient_clip"), **validation,
    )
    trainer.fit(module, ckpt_path=config.get("resume"), **loaders)
    bundle = out / "bundle"
    if trainer.is_global_zero:
        module.cpu().eval()
        if stage == "flint":
            save_flint_bundle(bundle, module.flint, extra={"trained_steps": trainer.global_step})
        else:
            source = config.get("flint_bundle") or config["stage1_bundle"]
            save_bundle(bundle, module.model, flint_source=str(source),
                        extra={"trained_steps": trainer.global_step, "stage": stage})
        print(f"wrote {bundle}")
    return bundle


def _stage2_module(config: dict[str, Any], flame: Any, vertices: Any) -> Any:
    import torch

    from ..checkpoints import load_model
    from .modules import EmoteStage2
    from .perceptual import VideoEmotion, load_emotion_cnn, load_lip_reader, load_video_emotion
    from .renderer import FixedViewRenderer

    if not len(flame.landmark_faces):
        raise ValueError("Stage 2 needs FLAME's landmark_embedding.npy (mouth landmarks): put "
                         "it beside the FLAME file or set landmark_embedding.")
    model = load_model(config["stage1_bundle"]).model
    renderer = FixedViewRenderer(
        torch.tensor(flame.faces), size=int(config.get("render_size", 224)),
        landmark_faces=torch.tensor(flame.landmark_faces),
        landmark_barycentrics=torch.tensor(flame.landmark_barycentrics, dtype=torch.float32))
    emotion = VideoEmotion(load_emotion_cnn(config["emotion_cnn"]),
                           load_video_emotion(config["video_emotion"]))
    return EmoteStage2(model, vertices, renderer, load_lip_reader(config["lip_reader"]),
                       emotion, weights=config.get("loss_weights"), lr=float(config["lr"]),
                       seed=int(config["seed"]))
