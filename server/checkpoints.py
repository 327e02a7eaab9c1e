# SPDX-License-Identifier: GPL-3.0-or-later
"""From files on disk to a ready :class:`~server.models.emote.EmoteModel`.

Two kinds of model folder are understood:

* **the official EMOTE v2 release**: ``EMOTE_v2/cfg.yaml`` + ``EMOTE_v2/checkpoints/last.ckpt``,
  with the FLINT motion prior found from ``cfg.model.sequence_decoder.motion_prior.path``;
* **our bundle**: ``config.json`` + ``model.safetensors`` (+ an optional FLAME reference), the
  format our training pipeline exports.

Every key is accounted for: a missing or unexpected weight is an error naming it, except the
documented extras of the official checkpoint (renderer and FLAME buffers).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .models.emote import MEAD_STYLES, EmoteConfig, EmoteModel
from .models.flint import Flint, FlintConfig
from .safe_pickle import load_torch_checkpoint

BUNDLE_FORMAT = "emote-bundle"
FLINT_BUNDLE_FORMAT = "flint-bundle"
BUNDLE_VERSION = 1

# Keys of the official checkpoint that inference does not use: the stage-2 renderer, FLAME
# buffers (FLAME comes from the user's own file), and FLINT's encoder/pre-processor if present.
IGNORED_PREFIXES = (
    "renderer.",
    "preprocessor.",
    "sequence_decoder.flame.",
    "sequence_decoder.motion_prior.motion_encoder.",
    "sequence_decoder.motion_prior.preprocessor.",
    "sequence_decoder.motion_prior.postprocessor.",
)
FLINT_DECODER_PREFIX = "sequence_decoder.motion_prior.motion_decoder."


class ModelFolderError(ValueError):
    """The model folder, its config or its weights do not make a usable EMOTE model."""


@dataclass
class LoadedModel:
    model: EmoteModel
    config: EmoteConfig
    kind: str  # "official" or "bundle"
    source: Path
    flint_source: str
    flame_path: Path | None = None
    notes: list[str] = field(default_factory=list)

    def info(self) -> dict[str, Any]:
        """What the model is, for ``python -m server info`` and the add-on."""
        c = self.config
        n_params = sum(p.numel() for p in self.model.parameters())
        return {
            "kind": self.kind,
            "source": str(self.source),
            "emotions": list(c.emotions),
            "intensities": list(c.intensities),
            "styles": list(c.styles),
            "condition_dim": c.condition_dim,
            "expression_dim": c.n_expression,
            "jaw_dim": 3,
            "fps": 25,
            "frames_per_latent": c.flint.frames_per_latent,
            "audio_hidden_size": self.model.audio_model.hidden_size,
            "audio_layers": int(self.model.audio_model.model.config.num_hidden_layers),
            "parameters": int(n_params),
            "flint": self.flint_source,
            "flame": str(self.flame_path) if self.flame_path else None,
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------------------------
# Entry point


def load_model(folder: str | Path | None = None, assets: str | Path | None = None
               ) -> LoadedModel:
    """Load an official EMOTE v2 folder or one of our bundles, weights on CPU, in eval mode.
    No folder means the built-in demo model (``server/demo/model``)."""
    if folder is None:
        from .demo.recipe import MODEL_DIR

        if not (MODEL_DIR / "config.json").is_file():
            raise ModelFolderError(f"The built-in demo model is missing from this install "
                                   f"('{MODEL_DIR}'); choose an EMOTE_v2 folder or a bundle.")
        folder = MODEL_DIR
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ModelFolderError(f"Model folder not found: '{folder}'.")
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        loaded = load_bundle(folder)
    elif (folder / "cfg.yaml").is_file():
        loaded = load_official(folder, assets)
    else:
        raise ModelFolderError(
            f"'{folder}' is not an EMOTE model folder. Expected either the official release "
            "folder (cfg.yaml and checkpoints/last.ckpt, e.g. TalkingHead/models/EMOTE_v2) or a "
            "bundle (config.json and model.safetensors).")
    loaded.model.eval()
    return loaded


# --------------------------------------------------------------------------------------------
# Official release


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ModelFolderError(f"'{path}' is not a readable YAML config: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ModelFolderError(f"'{path}' has no 'model' section; is this an EMOTE config?")
    return data


def _get(tree: Mapping[str, Any], dotted: str, default: Any = ...) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            if default is ...:
                raise ModelFolderError(f"The config has no '{dotted}' entry.")
            return default
        node = node[part]
    return node


def assets_root(emote_folder: Path, assets: str | Path | None) -> Path:
    """``--assets`` when given, else three levels above ``<assets>/TalkingHead/models/EMOTE_v2``."""
    if assets is not None:
        return Path(assets).expanduser()
    parents = emote_folder.resolve().parents
    return parents[2] if len(parents) > 2 else emote_folder.resolve().parent


def wav2vec2_overrides(specifier: str, roots: list[Path]) -> dict[str, Any]:
    """Wav2Vec2Config overrides for ``cfg.model.audio.model_specifier``.

    A local folder with a ``config.json`` (absolute, or relative to the current directory or
    the assets root) is read; a hub id of a *base* model uses the built-in base config; nothing
    is ever downloaded.
    """
    candidates = [Path(specifier).expanduser()]
    if not candidates[0].is_absolute():
        candidates = [Path.cwd() / specifier] + [root / specifier for root in roots]
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            config = json.loads((candidate / "config.json").read_text())
            from transformers import Wav2Vec2Config

            allowed = set(Wav2Vec2Config().to_dict())
            return {k: v for k, v in config.items() if k in allowed and not k.startswith("_")
                    and k not in ("architectures", "transformers_version", "model_type")}
    if "base" in specifier.lower():
        return {}  # the wav2vec2-base architecture = Wav2Vec2Config() defaults
    raise ModelFolderError(
        f"The audio model '{specifier}' is not a local folder with a config.json, and only "
        "wav2vec2-base architectures are built in. Put the model's config.json in a folder and "
        "set model.audio.model_specifier to it.")


def official_config(cfg: dict[str, Any], state: Mapping[str, torch.Tensor],
                    flint: FlintConfig, roots: list[Path]) -> EmoteConfig:
    """EmoteConfig from the official ``cfg.yaml`` (the checkpoint fills what it leaves out)."""
    decoder = _get(cfg, "model.sequence_decoder")
    bias_type = decoder.get("temporal_bias_type", "faceformer_future")
    if bias_type != "faceformer_future":
        raise ModelFolderError(
            f"Unsupported decoder attention bias '{bias_type}' (EMOTE v2 uses faceformer_future).")
    if decoder.get("style_op", "cat") != "cat":
        raise ModelFolderError(f"Unsupported style_op '{decoder.get('style_op')}' (EMOTE v2: cat).")
    squash = decoder.get("squash_type", "stack_linear")
    if not decoder.get("squash_after", True) or decoder.get("squash_before", False) or \
            squash != "stack_linear":
        raise ModelFolderError("Unsupported squasher settings (EMOTE v2: squash_after with "
                               "stack_linear).")
    style = decoder.get("style_embedding", {}) or {}
    for flag in ("use_shape", "use_video_expression", "use_expression", "use_valence",
                 "use_arousal", "use_emotion_feature"):
        if style.get(flag):
            raise ModelFolderError(f"Unsupported style embedding: '{flag}' is on (EMOTE v2 "
                                   "conditions on emotion, intensity and identity only).")
    n_emotions = int(style.get("n_expression", 8)) if style.get("gt_expression_label", True) else 0
    n_intensities = (int(style.get("n_intensities", 3))
                     if style.get("gt_expression_intensity", True) else 0)
    map_weight = state.get("sequence_decoder.obj_vector.map.weight")
    n_identities = style.get("n_identities")
    if not isinstance(n_identities, int):
        if map_weight is None:
            raise ModelFolderError("The config does not give n_identities and the checkpoint "
                                   "has no style map to read it from.")
        n_identities = int(map_weight.shape[1]) - n_emotions - n_intensities
    if not style.get("gt_expression_identity", True):
        n_identities = 0
    feature_dim = int(decoder.get("feature_dim", 128))
    emotions = ["Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt"]
    styles = list(MEAD_STYLES) if n_identities == len(MEAD_STYLES) else [
        f"Style {i + 1}" for i in range(n_identities)]
    return EmoteConfig(
        wav2vec2=wav2vec2_overrides(str(_get(cfg, "model.audio.model_specifier")), roots),
        feature_dim=feature_dim,
        n_heads=int(decoder.get("nhead", 8)),
        num_layers=int(decoder.get("num_layers", 1)),
        dim_feedforward=2 * feature_dim,  # dim_factor (2 for 'cat') × feature_dim
        dropout=float(decoder.get("dropout", 0.25)),
        period=int(decoder.get("period", 30)),
        style_bias=bool(style.get("use_bias", True)),
        emotions=emotions[:n_emotions] if n_emotions <= 8 else [
            f"Emotion {i + 1}" for i in range(n_emotions)],
        intensities=["mild", "medium", "strong"][:n_intensities] if n_intensities <= 3 else [
            f"Intensity {i + 1}" for i in range(n_intensities)],
        styles=styles,
        flint=flint,
    )


def flint_config_from_cfg(cfg: dict[str, Any]) -> FlintConfig:
    """FlintConfig from FLINT's ``cfg.yaml`` (sizes.quant_factor, the decoder's transformer)."""
    decoder = _get(cfg, "model.sequence_decoder", {}) or {}
    components = _get(cfg, "model.sequence_components", {"exp": 100, "jaw": "rot"}) or {}
    input_dim = 0
    for name, size in components.items():
        if isinstance(size, int):
            input_dim += size
        elif size == "rot":  # axis-angle, the representation FLINT v2 uses
            rep = _get(cfg, "model.rotation_representation", "aa")
            if rep != "aa":
                raise ModelFolderError(f"Unsupported FLINT rotation representation '{rep}'.")
            input_dim += 3
        else:
            raise ModelFolderError(f"Unsupported FLINT sequence component {name}: {size}.")
    feature_dim = int(decoder.get("feature_dim", 128))
    return FlintConfig(
        input_dim=input_dim,
        feature_dim=feature_dim,
        latent_dim=feature_dim,
        quant_factor=int(_get(cfg, "model.sizes.quant_factor", 3)),
        n_heads=int(decoder.get("nhead", 8)),
        dim_feedforward=int(decoder.get("intermediate_size", 384)),
        num_layers=int(decoder.get("num_layers", 1)),
    )


_LOSS_IN_STEM = re.compile(r"=([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)$")


def select_flint_checkpoint(flint_folder: Path, cfg: dict[str, Any], root: Path) -> Path:
    """The official rule: among ``*.ckpt`` whose path contains "val" (``last`` excluded), the one
    with the smallest number after the last ``=`` in its file name."""
    folders = [flint_folder]
    configured = _get(cfg, "inout.checkpoint_dir", None)
    if isinstance(configured, str):
        configured_path = Path(configured)
        folders.append(configured_path if configured_path.is_absolute() else root / configured)
    best: tuple[float, str, Path] | None = None
    for folder in folders:
        if not folder.is_dir():
            continue
        for ckpt in folder.rglob("*.ckpt"):
            if "val" not in str(ckpt.relative_to(folder)) or ckpt.stem == "last":
                continue
            match = _LOSS_IN_STEM.search(ckpt.stem)
            if match is None:
                continue
            key = (float(match.group(1)), str(ckpt), ckpt)
            if best is None or key[:2] < best[:2]:
                best = key
    if best is None:
        raise ModelFolderError(
            f"No FLINT checkpoint found in '{flint_folder}' (expected files such as "
            "checkpoints/model-epoch=0120-val/loss_total=0.0123.ckpt).")
    return best[2]


def _state_dict(checkpoint: Any, path: Path) -> dict[str, torch.Tensor]:
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise ModelFolderError(f"'{path}' holds no state_dict of named weights.")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_official(folder: Path, assets: str | Path | None = None) -> LoadedModel:
    cfg = _read_yaml(folder / "cfg.yaml")
    ckpt_path = folder / "checkpoints" / "last.ckpt"
    if not ckpt_path.is_file():
        raise ModelFolderError(f"'{folder}' has cfg.yaml but no checkpoints/last.ckpt.")
    root = assets_root(folder, assets)

    prior = _get(cfg, "model.sequence_decoder.motion_prior.path")
    flint_folder = Path(str(prior)).expanduser()
    if not flint_folder.is_absolute():
        flint_folder = root / flint_folder
    if not (flint_folder / "cfg.yaml").is_file():
        raise ModelFolderError(
            f"The FLINT motion prior '{prior}' was not found at '{flint_folder}'. Pass the "
            "assets folder that holds MotionPrior/ with --assets.")
    flint_cfg = _read_yaml(flint_folder / "cfg.yaml")
    flint_ckpt = select_flint_checkpoint(flint_folder, flint_cfg, root)

    emote_state = _state_dict(load_torch_checkpoint(ckpt_path), ckpt_path)
    flint_state = _state_dict(load_torch_checkpoint(flint_ckpt), flint_ckpt)
    config = official_config(cfg, emote_state, flint_config_from_cfg(flint_cfg), [root])
    model = EmoteModel(config)

    notes = []
    # EMOTE keeps the frozen FLINT decoder in its own checkpoint; FLINT's file is the fallback.
    state = {k: v for k, v in emote_state.items() if not k.startswith(IGNORED_PREFIXES)}
    flint_decoder = {FLINT_DECODER_PREFIX + k[len("motion_decoder."):]: v
                     for k, v in flint_state.items() if k.startswith("motion_decoder.")}
    if not any(k.startswith(FLINT_DECODER_PREFIX) for k in state):
        state.update(flint_decoder)
        notes.append("FLINT decoder weights taken from the FLINT checkpoint.")
    elif flint_decoder:
        differing = [k for k, v in flint_decoder.items()
                     if k in state and (v.shape != state[k].shape or not torch.equal(v, state[k]))]
        if differing:
            notes.append(f"{len(differing)} FLINT decoder tensors in the EMOTE checkpoint differ "
                         "from the FLINT checkpoint; the EMOTE checkpoint's are used.")
    load_weights(model, state, ckpt_path)
    return LoadedModel(model=model, config=config, kind="official", source=folder,
                       flint_source=str(flint_ckpt), notes=notes)


# --------------------------------------------------------------------------------------------
# Strict key matching


def _rename_weight_norm(state: dict[str, torch.Tensor], expected: set[str]
                        ) -> dict[str, torch.Tensor]:
    """Old ``weight_g``/``weight_v`` names → the parametrization names current torch uses."""
    renamed = {}
    for key, value in state.items():
        for old, new in ((".weight_g", ".parametrizations.weight.original0"),
                         (".weight_v", ".parametrizations.weight.original1")):
            if key.endswith(old) and key[: -len(old)] + new in expected:
                key = key[: -len(old)] + new
        renamed[key] = value
    return renamed


def load_weights(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: Path) -> None:
    """Load ``state`` into ``model``, failing with the names of every unmatched key."""
    expected = model.state_dict()
    state = _rename_weight_norm(dict(state), set(expected))
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [f"{k} (file {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
                  for k in sorted(set(state) & set(expected))
                  if state[k].shape != expected[k].shape]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected),
                        ("with the wrong shape", mismatched)):
        if keys:
            shown = ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
            problems.append(f"{len(keys)} weight(s) {label}: {shown}")
    if problems:
        raise ModelFolderError(f"The weights in '{source}' do not match the model: "
                               + "; ".join(problems) + ".")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


# --------------------------------------------------------------------------------------------
# Our bundles


def _read_bundle_config(folder: Path, fmt: str) -> dict[str, Any]:
    try:
        meta = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelFolderError(f"'{folder / 'config.json'}' is not valid JSON: {exc}") from exc
    if meta.get("format") != fmt:
        raise ModelFolderError(f"'{folder}' is not a {fmt} (config.json format is "
                               f"{meta.get('format')!r}).")
    if int(meta.get("version", 0)) > BUNDLE_VERSION:
        raise ModelFolderError(f"'{folder}' was written by a newer version (bundle version "
                               f"{meta.get('version')}); update the add-on.")
    return meta


def load_bundle(folder: Path) -> LoadedModel:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta = _read_bundle_config(folder, BUNDLE_FORMAT)
    try:
        config = EmoteConfig.from_dict(meta["model"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFolderError(
            f"'{folder / 'config.json'}' has an invalid model config: {exc}") from exc
    model = EmoteModel(config)
    try:
        state = load_file(folder / "model.safetensors")
    except (SafetensorError, OSError) as exc:
        raise ModelFolderError(f"Could not read '{folder / 'model.safetensors'}': {exc}") from exc
    load_weights(model, state, folder / "model.safetensors")
    flame = meta.get("flame")
    flame_path = (folder / flame) if flame else None
    return LoadedModel(model=model, config=config, kind="bundle", source=folder,
                       flint_source=str(meta.get("flint", "bundled")), flame_path=flame_path,
                       notes=list(meta.get("notes", [])))


def _write_folder_atomically(folder: Path, files: dict[str, Any]) -> None:
    """Write ``files`` (name → bytes or a callable that writes a path) into ``folder``; a crash
    leaves either the old folder contents or the new ones."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
        os.close(fd)
        try:
            if callable(content):
                content(tmp)
            else:
                Path(tmp).write_bytes(content)
            os.replace(tmp, folder / name)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _write_bundle(folder: str | Path, module: torch.nn.Module, meta: dict[str, Any]) -> Path:
    """``config.json`` (``meta``) + ``model.safetensors`` (``module``'s weights), atomically."""
    from safetensors.torch import save_file

    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    _write_folder_atomically(folder, {
        "model.safetensors": lambda p: save_file(state, p),
        "config.json": (json.dumps(meta, indent=2) + "\n").encode(),
    })
    return folder


def save_bundle(folder: str | Path, model: EmoteModel, flint_source: str = "bundled",
                flame: str | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as a bundle: ``config.json`` + ``model.safetensors``.

    ``flame`` names a FLAME file inside the folder that the model was trained with (optional).
    """
    meta = {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION,
            "model": model.config.to_dict(), "flint": flint_source}
    if flame:
        meta["flame"] = flame
    return _write_bundle(folder, model, {**meta, **(extra or {})})


def save_flint_bundle(folder: str | Path, flint: Flint, extra: dict[str, Any] | None = None
                      ) -> Path:
    """Write a trained FLINT (encoder + decoder) as ``config.json`` + ``model.safetensors``."""
    meta = {"format": FLINT_BUNDLE_FORMAT, "version": BUNDLE_VERSION,
            "model": flint.config.to_dict()}
    return _write_bundle(folder, flint, {**meta, **(extra or {})})


def load_flint_bundle(folder: str | Path) -> Flint:
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = _read_bundle_config(folder, FLINT_BUNDLE_FORMAT)
    flint = Flint(FlintConfig(**meta["model"]))
    load_weights(flint, load_file(folder / "model.safetensors"), folder / "model.safetensors")
    return flint.eval()
