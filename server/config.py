# SPDX-License-Identifier: GPL-3.0-or-later
"""What an EMOTE model is made of, without torch: the configs of EMOTE, FLINT and wav2vec2, their
checks, and the name and shape of every weight a config expects.

Both inference backends read these: the torch modules (``server/models``) are built from them,
and the ONNX Runtime graphs (``server/graphs``) are authored from them. Every number a config
gives is checked here, before anything is allocated: a bundle's ``config.json`` is a user's
file, and a width of 10^9 or a layer count of 10^6 must be a sentence, not a memory bomb.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .protocol import EMOTIONS, INTENSITIES, MEAD_STYLES

# Bounds on what a config may ask for. The official EMOTE v2 (wav2vec2-base) is far inside them.
MAX_WIDTH = 16_384
MAX_LAYERS = 64
MAX_KERNEL = 1_024
MAX_QUANT_FACTOR = 6  # one latent per 64 frames

_KINDS = {"int": "a whole number", "float": "a number", "bool": "true or false",
          "list[str]": "a list of names", "dict[str, Any]": "a mapping"}


def check_config_keys(cls: type, data: dict[str, Any], what: str) -> None:
    """Raise a ValueError listing the keys of ``data`` that the config dataclass ``cls`` lacks."""
    if not isinstance(data, dict):
        raise ValueError(f"The {what} config must be a mapping of settings, got "
                         f"{type(data).__name__}.")
    unknown = sorted(set(data) - set(cls.__dataclass_fields__))
    if unknown:
        raise ValueError(f"Unknown {what} config keys: {', '.join(map(str, unknown))}")


def check_config_types(config: Any, what: str) -> None:
    """Raise a ValueError naming the key when a config value has the wrong type (a quoted number
    in YAML, a list for a number, …), before it fails deep inside torch. Whole numbers are
    accepted where a number is expected and stored as floats."""
    for f in fields(config):
        value, kind = getattr(config, f.name), str(f.type)
        if kind not in _KINDS:
            continue
        number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        ok = {"int": number and isinstance(value, numbers.Integral),
              "float": number,
              "bool": isinstance(value, bool),
              "list[str]": isinstance(value, list) and all(isinstance(v, str) for v in value),
              "dict[str, Any]": isinstance(value, dict)}[kind]
        if not ok:
            raise ValueError(f"{what} config '{f.name}' must be {_KINDS[kind]}, got "
                             f"{value!r}.")
        if kind in ("int", "float"):
            setattr(config, f.name, int(value) if kind == "int" else float(value))


def _check_range(what: str, name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"{what} config '{name}' is {value!r}; it must be between {low} and "
                         f"{high}.")


def _check_divides(what: str, width_name: str, width: int, heads_name: str, heads: int) -> None:
    if width % heads:
        raise ValueError(f"{what} config '{width_name}' ({width}) must be a multiple of "
                         f"'{heads_name}' ({heads}).")


def _check_names(what: str, name: str, names: list[str]) -> None:
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{what} config '{name}' names {', '.join(duplicates)} more than once; "
                         "every entry must be distinct.")


# --------------------------------------------------------------------------------------------
# wav2vec2


# The architecture settings of ``transformers.Wav2Vec2Config`` that inference depends on, at
# their defaults: the wav2vec2-base architecture. Other Wav2Vec2Config keys (dropouts, masking,
# CTC, …) may appear in a config and change nothing at inference.
WAV2VEC2_BASE: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "feat_extract_norm": "group",
    "feat_extract_activation": "gelu",
    "conv_dim": [512] * 7,
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_bias": False,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "do_stable_layer_norm": False,
    "mask_time_prob": 0.05,
    "mask_feature_prob": 0.0,
    "add_adapter": False,
    "feat_proj_layer_norm": True,
}

# Every other key a Wav2Vec2Config knows: accepted in a config, irrelevant to inference.
WAV2VEC2_OTHER_KEYS = frozenset((
    "vocab_size", "hidden_dropout", "activation_dropout", "attention_dropout",
    "feat_proj_dropout", "feat_quantizer_dropout", "final_dropout", "layerdrop",
    "initializer_range", "apply_spec_augment", "mask_time_length", "mask_time_min_masks",
    "mask_feature_length", "mask_feature_min_masks", "num_codevectors_per_group",
    "num_codevector_groups", "contrastive_logits_temperature", "num_negatives", "codevector_dim",
    "proj_codevector_dim", "diversity_loss_weight", "ctc_loss_reduction", "ctc_zero_infinity",
    "use_weighted_layer_sum", "classifier_proj_size", "tdnn_dim", "tdnn_kernel",
    "tdnn_dilation", "xvector_output_dim", "pad_token_id", "bos_token_id", "eos_token_id",
    "adapter_kernel_size", "adapter_stride", "num_adapter_layers", "output_hidden_size",
    "adapter_attn_dim", "num_feat_extract_layers", "output_hidden_states", "return_dict",
    "dtype", "torch_dtype", "chunk_size_feed_forward", "is_encoder_decoder", "id2label",
    "label2id", "problem_type", "output_attentions", "use_cache", "tie_word_embeddings",
))
# Keys of a config.json that describe the file, not the model.
WAV2VEC2_META_KEYS = frozenset(("architectures", "transformers_version", "model_type",
                                "_name_or_path"))


@dataclass(frozen=True)
class Wav2Vec2Architecture:
    """The wav2vec2 settings inference needs, checked (from the overrides of an EMOTE config)."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    layer_norm_eps: float
    feat_extract_norm: str  # "group": GroupNorm after the first conv; "layer": after each
    conv_dim: tuple[int, ...]
    conv_stride: tuple[int, ...]
    conv_kernel: tuple[int, ...]
    conv_bias: bool
    num_conv_pos_embeddings: int
    num_conv_pos_embedding_groups: int
    do_stable_layer_norm: bool  # pre-LN layers and a final LayerNorm (the "large" variants)
    masked_spec_embed: bool  # the training-only mask vector is in the weights

    @property
    def samples_per_feature(self) -> int:
        """Total stride of the convolutions (320 samples: 50 features per second)."""
        stride = 1
        for step in self.conv_stride:
            stride *= step
        return stride

    @property
    def receptive_field(self) -> int:
        """Samples one CNN feature sees (400 for wav2vec2-base)."""
        span, stride = 1, 1
        for kernel, step in zip(self.conv_kernel, self.conv_stride, strict=True):
            span += (kernel - 1) * stride
            stride *= step
        return span

    def feature_count(self, samples: int) -> int:
        """CNN output frames for ``samples`` input samples (no padding anywhere)."""
        for kernel, stride in zip(self.conv_kernel, self.conv_stride, strict=True):
            samples = max(0, (samples - kernel) // stride + 1)
        return samples


def wav2vec2_architecture(overrides: dict[str, Any] | None) -> Wav2Vec2Architecture:
    """The checked wav2vec2 architecture for a config's ``wav2vec2`` overrides."""
    what = "wav2vec2"
    overrides = dict(overrides or {})
    unknown = sorted(k for k in overrides
                     if k not in WAV2VEC2_BASE and k not in WAV2VEC2_OTHER_KEYS
                     and k not in WAV2VEC2_META_KEYS)
    if unknown:
        raise ValueError(f"Unknown wav2vec2 config keys: {', '.join(map(str, unknown))}")
    s = {**WAV2VEC2_BASE, **{k: v for k, v in overrides.items() if k in WAV2VEC2_BASE}}

    def integer(name: str, low: int, high: int) -> int:
        value = s[name]
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise ValueError(f"{what} config '{name}' must be a whole number, got {value!r}.")
        _check_range(what, name, int(value), low, high)
        return int(value)

    def integers(name: str, low: int, high: int) -> tuple[int, ...]:
        value = s[name]
        if not isinstance(value, (list, tuple)) or not value or not all(
                isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
            raise ValueError(f"{what} config '{name}' must be a list of whole numbers, got "
                             f"{value!r}.")
        if len(value) > MAX_LAYERS:
            raise ValueError(f"{what} config '{name}' has {len(value)} entries; at most "
                             f"{MAX_LAYERS} are supported.")
        for v in value:
            _check_range(what, name, int(v), low, high)
        return tuple(int(v) for v in value)

    def flag(name: str) -> bool:
        if not isinstance(s[name], bool):
            raise ValueError(f"{what} config '{name}' must be true or false, got {s[name]!r}.")
        return s[name]

    for name, allowed in (("hidden_act", ("gelu",)), ("feat_extract_activation", ("gelu",)),
                          ("feat_extract_norm", ("group", "layer"))):
        if s[name] not in allowed:
            raise ValueError(f"{what} config '{name}' is {s[name]!r}; supported: "
                             f"{', '.join(allowed)}.")
    if flag("add_adapter"):
        raise ValueError("wav2vec2 config 'add_adapter' is on; wav2vec2 adapters are not "
                         "supported (EMOTE does not use them).")
    if not flag("feat_proj_layer_norm"):
        raise ValueError("wav2vec2 config 'feat_proj_layer_norm' is off; only the standard "
                         "feature projection (with its LayerNorm) is supported.")
    eps = s["layer_norm_eps"]
    if not isinstance(eps, numbers.Real) or isinstance(eps, bool) or not 0 < eps < 1:
        raise ValueError(f"{what} config 'layer_norm_eps' must be a small positive number, got "
                         f"{eps!r}.")
    probabilities = []
    for name in ("mask_time_prob", "mask_feature_prob"):
        value = s[name]
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise ValueError(f"{what} config '{name}' must be a number, got {value!r}.")
        probabilities.append(float(value))
    arch = Wav2Vec2Architecture(
        hidden_size=integer("hidden_size", 1, MAX_WIDTH),
        num_hidden_layers=integer("num_hidden_layers", 1, MAX_LAYERS),
        num_attention_heads=integer("num_attention_heads", 1, MAX_WIDTH),
        intermediate_size=integer("intermediate_size", 1, 4 * MAX_WIDTH),
        layer_norm_eps=float(eps),
        feat_extract_norm=s["feat_extract_norm"],
        conv_dim=integers("conv_dim", 1, MAX_WIDTH),
        conv_stride=integers("conv_stride", 1, MAX_KERNEL),
        conv_kernel=integers("conv_kernel", 1, MAX_KERNEL),
        conv_bias=flag("conv_bias"),
        num_conv_pos_embeddings=integer("num_conv_pos_embeddings", 1, MAX_KERNEL),
        num_conv_pos_embedding_groups=integer("num_conv_pos_embedding_groups", 1, MAX_WIDTH),
        do_stable_layer_norm=flag("do_stable_layer_norm"),
        masked_spec_embed=any(p > 0 for p in probabilities),
    )
    if not len(arch.conv_dim) == len(arch.conv_stride) == len(arch.conv_kernel):
        raise ValueError("wav2vec2 config 'conv_dim', 'conv_stride' and 'conv_kernel' must have "
                         "the same length.")
    _check_divides(what, "hidden_size", arch.hidden_size, "num_attention_heads",
                   arch.num_attention_heads)
    _check_divides(what, "hidden_size", arch.hidden_size, "num_conv_pos_embedding_groups",
                   arch.num_conv_pos_embedding_groups)
    return arch


# --------------------------------------------------------------------------------------------
# FLINT and EMOTE


@dataclass
class FlintConfig:
    input_dim: int = 103  # 100 expression + 3 jaw axis-angle, raw
    feature_dim: int = 128
    latent_dim: int = 128
    quant_factor: int = 3  # one latent per 2**3 = 8 frames
    n_heads: int = 8
    dim_feedforward: int = 384
    num_layers: int = 1
    smooth_kernel: int = 5

    def __post_init__(self) -> None:
        what = "FLINT"
        check_config_types(self, what)
        _check_range(what, "input_dim", self.input_dim, 4, MAX_WIDTH)  # ≥ 1 expression + jaw
        for name in ("feature_dim", "latent_dim", "n_heads", "dim_feedforward"):
            _check_range(what, name, getattr(self, name), 1, MAX_WIDTH)
        _check_range(what, "quant_factor", self.quant_factor, 1, MAX_QUANT_FACTOR)
        _check_range(what, "num_layers", self.num_layers, 1, MAX_LAYERS)
        _check_range(what, "smooth_kernel", self.smooth_kernel, 1, MAX_KERNEL)
        if self.smooth_kernel % 2 == 0:
            raise ValueError(f"FLINT config 'smooth_kernel' must be odd (it keeps the length), "
                             f"got {self.smooth_kernel}.")
        _check_divides(what, "feature_dim", self.feature_dim, "n_heads", self.n_heads)

    @property
    def frames_per_latent(self) -> int:
        return 2 ** self.quant_factor

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FlintConfig:
        check_config_keys(cls, data, "FLINT")
        return cls(**data)


@dataclass
class EmoteConfig:
    wav2vec2: dict[str, Any] = field(default_factory=dict)  # Wav2Vec2Config overrides
    feature_dim: int = 128  # audio projection and style embedding; the transformer is 2×
    n_heads: int = 8
    num_layers: int = 1
    dim_feedforward: int = 256
    dropout: float = 0.25
    period: int = 30  # the regressor's bias grows by one slope every 30 frames
    style_bias: bool = True
    emotions: list[str] = field(default_factory=lambda: list(EMOTIONS))
    intensities: list[str] = field(default_factory=lambda: list(INTENSITIES))
    styles: list[str] = field(default_factory=lambda: list(MEAD_STYLES))
    flint: FlintConfig = field(default_factory=FlintConfig)

    def __post_init__(self) -> None:
        what = "EMOTE"
        check_config_types(self, what)
        for name in ("feature_dim", "n_heads", "dim_feedforward"):
            _check_range(what, name, getattr(self, name), 1, MAX_WIDTH)
        _check_range(what, "num_layers", self.num_layers, 1, MAX_LAYERS)
        _check_range(what, "period", self.period, 1, 100_000)
        _check_range(what, "dropout", self.dropout, 0.0, 0.99)
        _check_divides(what, "2 × feature_dim", 2 * self.feature_dim, "n_heads", self.n_heads)
        for name in ("emotions", "intensities", "styles"):
            _check_names(what, name, getattr(self, name))
        if self.condition_dim == 0:
            raise ValueError("EMOTE config names no emotions, intensities or styles: the model "
                             "would have no condition.")
        if not isinstance(self.flint, FlintConfig):
            raise ValueError("EMOTE config 'flint' must be a FLINT config.")
        wav2vec2_architecture(self.wav2vec2)

    @property
    def audio(self) -> Wav2Vec2Architecture:
        """The checked wav2vec2 architecture of ``wav2vec2``."""
        return wav2vec2_architecture(self.wav2vec2)

    @property
    def condition_dim(self) -> int:
        return len(self.emotions) + len(self.intensities) + len(self.styles)

    @property
    def n_expression(self) -> int:
        return self.flint.input_dim - 3

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmoteConfig:
        if not isinstance(data, dict):
            raise ValueError("The EMOTE config must be a mapping of settings, got "
                             f"{type(data).__name__}.")
        data = dict(data)
        flint = FlintConfig.from_dict(data.pop("flint", {}))
        check_config_keys(cls, data, "EMOTE")
        return cls(flint=flint, **data)


# --------------------------------------------------------------------------------------------
# The weights a config expects, by their official names

Shapes = dict[str, tuple[int, ...]]


def _linear(shapes: Shapes, prefix: str, out_dim: int, in_dim: int, bias: bool = True) -> None:
    shapes[f"{prefix}.weight"] = (out_dim, in_dim)
    if bias:
        shapes[f"{prefix}.bias"] = (out_dim,)


def _norm(shapes: Shapes, prefix: str, dim: int) -> None:
    shapes[f"{prefix}.weight"] = (dim,)
    shapes[f"{prefix}.bias"] = (dim,)


def _batch_norm(shapes: Shapes, prefix: str, dim: int) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{prefix}.{name}"] = (dim,)
    shapes[f"{prefix}.num_batches_tracked"] = ()


def _encoder_layer(shapes: Shapes, prefix: str, width: int, feedforward: int) -> None:
    """``nn.TransformerEncoderLayer`` names (our BiasedEncoderLayer keeps them)."""
    shapes[f"{prefix}.self_attn.in_proj_weight"] = (3 * width, width)
    shapes[f"{prefix}.self_attn.in_proj_bias"] = (3 * width,)
    _linear(shapes, f"{prefix}.self_attn.out_proj", width, width)
    _linear(shapes, f"{prefix}.linear1", feedforward, width)
    _linear(shapes, f"{prefix}.linear2", width, feedforward)
    _norm(shapes, f"{prefix}.norm1", width)
    _norm(shapes, f"{prefix}.norm2", width)


def wav2vec2_weights(arch: Wav2Vec2Architecture, prefix: str = "") -> Shapes:
    """``transformers.Wav2Vec2Model`` state-dict names and shapes (weight norm as
    parametrizations, the names current torch uses)."""
    shapes: Shapes = {}
    if arch.masked_spec_embed:
        shapes[f"{prefix}masked_spec_embed"] = (arch.hidden_size,)
    channels = 1
    for i, (dim, kernel) in enumerate(zip(arch.conv_dim, arch.conv_kernel, strict=True)):
        conv = f"{prefix}feature_extractor.conv_layers.{i}"
        shapes[f"{conv}.conv.weight"] = (dim, channels, kernel)
        if arch.conv_bias:
            shapes[f"{conv}.conv.bias"] = (dim,)
        if arch.feat_extract_norm == "layer" or i == 0:
            _norm(shapes, f"{conv}.layer_norm", dim)
        channels = dim
    hidden = arch.hidden_size
    _norm(shapes, f"{prefix}feature_projection.layer_norm", channels)
    _linear(shapes, f"{prefix}feature_projection.projection", hidden, channels)
    pos = f"{prefix}encoder.pos_conv_embed.conv"
    kernel = arch.num_conv_pos_embeddings
    shapes[f"{pos}.parametrizations.weight.original0"] = (1, 1, kernel)
    shapes[f"{pos}.parametrizations.weight.original1"] = (
        hidden, hidden // arch.num_conv_pos_embedding_groups, kernel)
    shapes[f"{pos}.bias"] = (hidden,)
    _norm(shapes, f"{prefix}encoder.layer_norm", hidden)
    for i in range(arch.num_hidden_layers):
        layer = f"{prefix}encoder.layers.{i}"
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            _linear(shapes, f"{layer}.attention.{name}", hidden, hidden)
        _norm(shapes, f"{layer}.layer_norm", hidden)
        _linear(shapes, f"{layer}.feed_forward.intermediate_dense", arch.intermediate_size,
                hidden)
        _linear(shapes, f"{layer}.feed_forward.output_dense", hidden, arch.intermediate_size)
        _norm(shapes, f"{layer}.final_layer_norm", hidden)
    return shapes


def flint_decoder_weights(config: FlintConfig, prefix: str) -> Shapes:
    c = config
    shapes: Shapes = {}
    shapes[f"{prefix}expander.0.0.weight"] = (c.latent_dim, c.feature_dim, 5)  # (in, out, k)
    shapes[f"{prefix}expander.0.0.bias"] = (c.feature_dim,)
    _batch_norm(shapes, f"{prefix}expander.0.2", c.feature_dim)
    for i in range(1, c.quant_factor):
        shapes[f"{prefix}expander.{i}.0.weight"] = (c.feature_dim, c.feature_dim, 5)
        shapes[f"{prefix}expander.{i}.0.bias"] = (c.feature_dim,)
        _batch_norm(shapes, f"{prefix}expander.{i}.2", c.feature_dim)
    _linear(shapes, f"{prefix}decoder_linear_embedding", c.feature_dim, c.feature_dim)
    for i in range(c.num_layers):
        _encoder_layer(shapes, f"{prefix}decoder_transformer.layers.{i}", c.feature_dim,
                       c.dim_feedforward)
    _linear(shapes, f"{prefix}post_transformer_linear", c.feature_dim, c.feature_dim)
    shapes[f"{prefix}cross_smooth_layer.weight"] = (c.input_dim, c.feature_dim, c.smooth_kernel)
    shapes[f"{prefix}cross_smooth_layer.bias"] = (c.input_dim,)
    return shapes


FLINT_DECODER_PREFIX = "sequence_decoder.motion_prior.motion_decoder."


def emote_weights(config: EmoteConfig) -> Shapes:
    """Every weight of an EMOTE model, by its official checkpoint name, with its shape."""
    c = config
    width = 2 * c.feature_dim
    shapes = wav2vec2_weights(c.audio, "audio_model.model.")
    _linear(shapes, "sequence_encoder.linear", c.feature_dim, c.audio.hidden_size)
    _linear(shapes, "sequence_decoder.obj_vector.map", c.feature_dim, c.condition_dim,
            c.style_bias)
    for i in range(c.num_layers):
        _encoder_layer(shapes, f"sequence_decoder.bert_decoder.layers.{i}", width,
                       c.dim_feedforward)
    _linear(shapes, "sequence_decoder.decoder", c.feature_dim, width)
    _linear(shapes, "sequence_decoder.squasher_2.linear", c.flint.latent_dim,
            c.feature_dim * c.flint.frames_per_latent)
    shapes.update(flint_decoder_weights(c.flint, FLINT_DECODER_PREFIX))
    return shapes
