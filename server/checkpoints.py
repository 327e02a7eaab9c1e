# SPDX-License-Identifier: GPL-3.0-or-later
"""From files on disk to a model: its config and its weights as NumPy arrays, without torch.

Two kinds of model folder are understood:

* **the official EMOTE v2 release**: ``EMOTE_v2/cfg.yaml`` + ``EMOTE_v2/checkpoints/last.ckpt``,
  with the FLINT motion prior found from ``cfg.model.sequence_decoder.motion_prior.path``;
* **our bundle**: ``config.json`` + ``model.safetensors`` (+ an optional FLAME reference), the
  format our training pipeline exports.

:func:`read_model` gives a :class:`ModelSource` (config + weights); either backend runs it.
Every key is accounted for: a missing or unexpected weight is an error naming it, except the
documented extras of the official checkpoint (renderer and FLAME buffers); weights must be
finite floating-point numbers of the shape the config implies, and a bundle's shapes are
checked from the file's header before any weight is read. :func:`load_model` builds the torch
modules (training, export, CUDA); torch is imported only there and in the bundle writers.
"""

from __future__ import annotations

import json
import numbers
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .builtin import DEMO_MODEL_DIR
from .config import (
    FLINT_DECODER_PREFIX,
    WAV2VEC2_BASE,
    WAV2VEC2_OTHER_KEYS,
    EmoteConfig,
    FlintConfig,
    Shapes,
    emote_weights,
)
from .protocol import EMOTIONS, MEAD_STYLES

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


MAX_CONDITION_NAMES = 10_000  # emotions, intensities or speaking styles an official config names


class ModelFolderError(ValueError):
    """The model folder, its config or its weights do not make a usable EMOTE model."""


@dataclass
class ModelSource:
    """A model as read from disk: what it is and its weights (official names, NumPy)."""

    config: EmoteConfig
    kind: str  # "official" or "bundle"
    source: Path
    flint_source: str
    state: dict[str, np.ndarray] = field(default_factory=dict)
    flame_path: Path | None = None
    notes: list[str] = field(default_factory=list)
    # The expression coefficients the model was trained to drive (a bundle may say so: the
    # demo model's corpus animates the demo head's first 18 components); later ones are noise
    # the training never saw, and are written as zero. None: all of them.
    expression_components: int | None = None

    def info(self) -> dict[str, Any]:
        """What the model is, for ``python -m server info`` and the add-on."""
        c = self.config
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
            "audio_hidden_size": c.audio.hidden_size,
            "audio_layers": c.audio.num_hidden_layers,
            "parameters": self.parameter_count(),
            "flint": self.flint_source,
            "flame": str(self.flame_path) if self.flame_path else None,
            "notes": list(self.notes),
        }


    def parameter_count(self) -> int:
        return int(sum(v.size for k, v in self.state.items()
                       if not k.endswith("num_batches_tracked")))


@dataclass
class LoadedModel(ModelSource):
    """A model with its torch modules built (the torch backend, training, export)."""

    model: Any = None  # server.models.emote.EmoteModel

    def parameter_count(self) -> int:
        if self.model is None:
            return super().parameter_count()
        return int(sum(p.numel() for p in self.model.parameters()))


# --------------------------------------------------------------------------------------------
# Entry points


def read_model(folder: str | Path | None = None, assets: str | Path | None = None
               ) -> ModelSource:
    """Read an official EMOTE v2 folder or one of our bundles: config and checked weights.
    No folder means the built-in demo model."""
    if folder is None:
        if not (DEMO_MODEL_DIR / "config.json").is_file():
            raise ModelFolderError(f"The built-in demo model is missing from this install "
                                   f"('{DEMO_MODEL_DIR}'); choose an EMOTE_v2 folder or a "
                                   "bundle.")
        folder = DEMO_MODEL_DIR
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ModelFolderError(f"Model folder not found: '{folder}'.")
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return read_bundle(folder)
    if (folder / "cfg.yaml").is_file():
        return read_official(folder, assets)
    raise ModelFolderError(
        f"'{folder}' is not an EMOTE model folder. Expected either the official release "
        "folder (cfg.yaml and checkpoints/last.ckpt, e.g. TalkingHead/models/EMOTE_v2) or a "
        "bundle (config.json and model.safetensors).")


def load_model(folder: str | Path | None = None, assets: str | Path | None = None
               ) -> LoadedModel:
    """:func:`read_model`, then the torch modules with those weights, on CPU, in eval mode."""
    source = read_model(folder, assets)
    model = build_torch_model(source)
    fields = {f: getattr(source, f) for f in ModelSource.__dataclass_fields__ if f != "state"}
    return LoadedModel(**fields, model=model)  # the weights now live in the modules


def build_torch_model(source: ModelSource) -> Any:
    """The torch ``EmoteModel`` of ``source``, weights loaded, eval mode."""
    from .models.emote import EmoteModel

    model = EmoteModel(source.config)
    load_weights(model, source.state, source.source)
    return model.eval()


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
            try:
                config = json.loads((candidate / "config.json").read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ModelFolderError(f"'{candidate / 'config.json'}' is not a readable JSON "
                                       f"config: {exc}") from exc
            if not isinstance(config, dict):
                raise ModelFolderError(f"'{candidate / 'config.json'}' does not hold a config.")
            known = set(WAV2VEC2_BASE) | WAV2VEC2_OTHER_KEYS
            return {k: v for k, v in config.items() if k in known}
    if "base" in specifier.lower():
        return {}  # the wav2vec2-base architecture = Wav2Vec2Config() defaults
    raise ModelFolderError(
        f"The audio model '{specifier}' is not a local folder with a config.json, and only "
        "wav2vec2-base architectures are built in. Put the model's config.json in a folder and "
        "set model.audio.model_specifier to it.")


def official_config(cfg: dict[str, Any], state: Mapping[str, np.ndarray],
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
    for name, count in (("n_expression", n_emotions), ("n_intensities", n_intensities),
                        ("n_identities", n_identities)):
        if not 0 <= count <= MAX_CONDITION_NAMES:
            raise ModelFolderError(f"The config's style_embedding.{name} is {count}; it must be "
                                   f"between 0 and {MAX_CONDITION_NAMES}.")
    feature_dim = int(decoder.get("feature_dim", 128))
    emotions = list(EMOTIONS)
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


def _state_dict(checkpoint: Any, path: Path) -> dict[str, np.ndarray]:
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise ModelFolderError(f"'{path}' holds no state_dict of named weights.")
    return {k: v for k, v in state.items() if isinstance(v, np.ndarray)}


def _read_checkpoint(path: Path) -> dict[str, np.ndarray]:
    from .tensor_files import read_torch_file

    try:
        return _state_dict(read_torch_file(path), path)
    except ModelFolderError:
        raise
    except (OSError, EOFError) as exc:
        raise ModelFolderError(f"Could not read the checkpoint '{path}': {exc}") from exc


def read_official(folder: Path, assets: str | Path | None = None) -> ModelSource:
    cfg = _read_yaml(folder / "cfg.yaml")
    ckpt_path = folder / "checkpoints" / "last.ckpt"
    if not ckpt_path.is_file():
        raise ModelFolderError(f"'{folder}' has cfg.yaml but no checkpoints/last.ckpt.")
    root = assets_root(folder, assets)

    prior = _get(cfg, "model.sequence_decoder.motion_prior.path")
    if not isinstance(prior, str):
        raise ModelFolderError("The config's model.sequence_decoder.motion_prior.path must name "
                               f"the FLINT folder, got {prior!r}.")
    flint_folder = Path(prior).expanduser()
    if not flint_folder.is_absolute():
        flint_folder = root / flint_folder
    if not (flint_folder / "cfg.yaml").is_file():
        raise ModelFolderError(
            f"The FLINT motion prior '{prior}' was not found at '{flint_folder}'. Pass the "
            "assets folder that holds MotionPrior/ with --assets.")
    flint_cfg = _read_yaml(flint_folder / "cfg.yaml")
    flint_ckpt = select_flint_checkpoint(flint_folder, flint_cfg, root)

    emote_state = _read_checkpoint(ckpt_path)
    try:
        config = official_config(cfg, emote_state, flint_config_from_cfg(flint_cfg), [root])
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ModelFolderError):
            raise
        raise ModelFolderError(f"'{folder / 'cfg.yaml'}' describes a model we cannot build: "
                               f"{exc}") from exc

    notes = []
    # EMOTE keeps the frozen FLINT decoder in its own checkpoint; FLINT's file is the fallback.
    state = {k: v for k, v in emote_state.items() if not k.startswith(IGNORED_PREFIXES)}
    flint_decoder = {FLINT_DECODER_PREFIX + k[len("motion_decoder."):]: v
                     for k, v in _read_checkpoint(flint_ckpt).items()
                     if k.startswith("motion_decoder.")}
    if not any(k.startswith(FLINT_DECODER_PREFIX) for k in state):
        state.update(flint_decoder)
        notes.append("FLINT decoder weights taken from the FLINT checkpoint.")
    elif flint_decoder:
        differing = [k for k, v in flint_decoder.items()
                     if k in state and (v.shape != state[k].shape
                                        or not np.array_equal(v, state[k]))]
        if differing:
            notes.append(f"{len(differing)} FLINT decoder tensors in the EMOTE checkpoint differ "
                         "from the FLINT checkpoint; the EMOTE checkpoint's are used.")
    state = check_weights(emote_weights(config), state, ckpt_path)
    return ModelSource(config=config, state=state, kind="official", source=folder,
                       flint_source=str(flint_ckpt), notes=notes)


# --------------------------------------------------------------------------------------------
# Strict key matching

_WEIGHT_NORM_NAMES = ((".weight_g", ".parametrizations.weight.original0"),
                      (".weight_v", ".parametrizations.weight.original1"))


def _rename_weight_norm(state: Mapping[str, Any], expected: set[str]) -> dict[str, Any]:
    """Old ``weight_g``/``weight_v`` names → the parametrization names current torch uses."""
    renamed = {}
    for key, value in state.items():
        for old, new in _WEIGHT_NORM_NAMES:
            if key.endswith(old) and key[: -len(old)] + new in expected:
                key = key[: -len(old)] + new
        renamed[key] = value
    return renamed


def _shown(keys: list[str]) -> str:
    return ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")


def check_names_and_shapes(expected: Shapes, found: Mapping[str, tuple[int, ...]],
                           source: Path) -> None:
    """Raise a ModelFolderError naming every missing, unexpected or misshaped weight."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = [f"{k} (file {tuple(found[k])}, model {expected[k]})"
                  for k in sorted(set(found) & set(expected))
                  if tuple(found[k]) != tuple(expected[k])]
    problems = [f"{len(keys)} weight(s) {label}: {_shown(keys)}"
                for label, keys in (("missing", missing), ("unexpected", unexpected),
                                    ("with the wrong shape", mismatched)) if keys]
    if problems:
        raise ModelFolderError(f"The weights in '{source}' do not match the model: "
                               + "; ".join(problems) + ".")


def check_weights(expected: Shapes, state: Mapping[str, np.ndarray], source: Path
                  ) -> dict[str, np.ndarray]:
    """``state`` with every name and shape of ``expected``, floating point and finite
    (BatchNorm's step counters: whole numbers); raises a ModelFolderError naming what is
    wrong."""
    state = _rename_weight_norm(state, set(expected))
    check_names_and_shapes(expected, {k: v.shape for k, v in state.items()}, source)
    counters = [k for k in state if k.endswith("num_batches_tracked")]
    wrong_type = sorted(k for k, v in state.items() if k not in counters
                        and v.dtype.kind != "f")
    if wrong_type:
        kinds = sorted({str(state[k].dtype) for k in wrong_type})
        raise ModelFolderError(
            f"The weights in '{source}' must be floating-point numbers, but "
            f"{len(wrong_type)} are stored as {', '.join(kinds)}: {_shown(wrong_type)}.")
    broken = sorted(k for k, v in state.items() if k not in counters
                    and not np.isfinite(v).all())
    if broken:
        raise ModelFolderError(
            f"The weights in '{source}' hold NaN or infinite values ({_shown(broken)}); the "
            "file is damaged or the training diverged.")
    return dict(state)


def load_weights(model: Any, state: Mapping[str, Any], source: Path) -> None:
    """Load ``state`` (NumPy arrays or tensors) into the torch ``model``, failing with the names
    of every unmatched key."""
    import torch

    expected = model.state_dict()
    state = _rename_weight_norm(state, set(expected))
    check_names_and_shapes({k: tuple(v.shape) for k, v in expected.items()},
                           {k: tuple(v.shape) for k, v in state.items()}, source)
    model.load_state_dict(
        {k: torch.as_tensor(np.asarray(v) if isinstance(v, np.ndarray) else v
                            ).to(expected[k].dtype) for k, v in state.items()}, strict=True)


# --------------------------------------------------------------------------------------------
# Our bundles


def _read_bundle_config(folder: Path, fmt: str) -> dict[str, Any]:
    path = folder / "config.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFolderError(f"'{path}' is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise ModelFolderError(f"'{path}' must hold a JSON object (a bundle's settings), not "
                               f"a {type(meta).__name__}.")
    if meta.get("format") != fmt:
        raise ModelFolderError(f"'{folder}' is not a {fmt} (config.json format is "
                               f"{meta.get('format')!r}).")
    version = meta.get("version", 0)
    if not isinstance(version, numbers.Integral) or isinstance(version, bool):
        raise ModelFolderError(f"'{path}': 'version' must be a whole number, got {version!r}.")
    if version > BUNDLE_VERSION:
        raise ModelFolderError(f"'{folder}' was written by a newer version (bundle version "
                               f"{version}); update the add-on.")
    if not isinstance(meta.get("model"), dict):
        raise ModelFolderError(f"'{path}' has no 'model' settings (a JSON object); it is not a "
                               "complete bundle.")
    return meta


def _read_bundle_weights(path: Path, expected: Shapes) -> dict[str, np.ndarray]:
    """The bundle's weights, after its header matched ``expected``: a config asking for huge
    layers fails here, before anything that size is read or built."""
    from .tensor_files import read_safetensors, safetensors_header

    try:
        header = safetensors_header(path)
        check_names_and_shapes(expected, {k: shape for k, (_, shape) in header.items()}, path)
        state = read_safetensors(path)
    except ModelFolderError:
        raise
    except (OSError, ValueError) as exc:
        raise ModelFolderError(f"Could not read '{path}': {exc}") from exc
    return check_weights(expected, state, path)


def read_bundle(folder: Path) -> ModelSource:
    meta = _read_bundle_config(folder, BUNDLE_FORMAT)
    try:
        config = EmoteConfig.from_dict(meta["model"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFolderError(
            f"'{folder / 'config.json'}' has an invalid model config: {exc}") from exc
    state = _read_bundle_weights(folder / "model.safetensors", emote_weights(config))
    flame = meta.get("flame")
    if flame is not None and not isinstance(flame, str):
        raise ModelFolderError(f"'{folder / 'config.json'}': 'flame' must name a file in the "
                               f"bundle, got {flame!r}.")
    notes = meta.get("notes", [])
    components = meta.get("expression_components")
    if components is not None and (not isinstance(components, numbers.Integral)
                                   or isinstance(components, bool)
                                   or not 1 <= components <= config.n_expression):
        raise ModelFolderError(f"'{folder / 'config.json'}': 'expression_components' must be a "
                               f"whole number from 1 to {config.n_expression}, got "
                               f"{components!r}.")
    return ModelSource(config=config, state=state, kind="bundle", source=folder,
                       flint_source=str(meta.get("flint", "bundled")),
                       flame_path=(folder / flame) if flame else None,
                       notes=[str(n) for n in notes] if isinstance(notes, list) else [],
                       expression_components=components)


def _write_folder_atomically(folder: Path, files: dict[str, Any]) -> None:
    """Write ``files`` (name → bytes or a callable that writes a path) into ``folder``; a crash
    leaves either the old folder contents or the new ones. Only regular files are replaced
    (never a link, a folder or a device), and the files get the mode the umask gives."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in files:
        target = folder / name
        if os.path.lexists(target) and (target.is_symlink() or not target.is_file()):
            raise ModelFolderError(f"'{target}' is in the way: it is not a file a bundle wrote "
                                   "(a link, a folder or a device), so it is not replaced.")
    for name, content in files.items():
        tmp = str(folder / f".{name}.{secrets.token_hex(4)}.tmp")
        # os.open with 0o666: the umask decides the mode, as for any file the user creates.
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        mode = os.stat(tmp).st_mode & 0o777
        try:
            if callable(content):
                content(tmp)  # safetensors writes a file of its own: give it that mode again
            else:
                Path(tmp).write_bytes(content)
            os.chmod(tmp, mode)
            os.replace(tmp, folder / name)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _write_bundle(folder: str | Path, module: Any, meta: dict[str, Any]) -> Path:
    """``config.json`` (``meta``) + ``model.safetensors`` (``module``'s weights), atomically."""
    from safetensors.torch import save_file

    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    _write_folder_atomically(folder, {
        "model.safetensors": lambda p: save_file(state, p),
        "config.json": (json.dumps(meta, indent=2) + "\n").encode(),
    })
    return folder


def save_bundle(folder: str | Path, model: Any, flint_source: str = "bundled",
                flame: str | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (a torch EmoteModel) as a bundle: ``config.json`` + ``model.safetensors``.

    ``flame`` names a FLAME file inside the folder that the model was trained with (optional).
    """
    meta = {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION,
            "model": model.config.to_dict(), "flint": flint_source}
    if flame:
        meta["flame"] = flame
    return _write_bundle(folder, model, {**meta, **(extra or {})})


def save_flint_bundle(folder: str | Path, flint: Any, extra: dict[str, Any] | None = None
                      ) -> Path:
    """Write a trained FLINT (encoder + decoder) as ``config.json`` + ``model.safetensors``."""
    meta = {"format": FLINT_BUNDLE_FORMAT, "version": BUNDLE_VERSION,
            "model": flint.config.to_dict()}
    return _write_bundle(folder, flint, {**meta, **(extra or {})})


def load_flint_bundle(folder: str | Path) -> Any:
    """A FLINT bundle as the torch ``Flint`` (training, the demo recipe)."""
    from .models.flint import Flint

    folder = Path(folder)
    meta = _read_bundle_config(folder, FLINT_BUNDLE_FORMAT)
    try:
        config = FlintConfig.from_dict(meta["model"])
    except (TypeError, ValueError) as exc:
        raise ModelFolderError(
            f"'{folder / 'config.json'}' has an invalid FLINT config: {exc}") from exc
    flint = Flint(config)
    expected = {k: tuple(v.shape) for k, v in flint.state_dict().items()}
    load_weights(flint, _read_bundle_weights(folder / "model.safetensors", expected),
                 folder / "model.safetensors")
    return flint.eval()
