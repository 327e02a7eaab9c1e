# SPDX-License-Identifier: GPL-3.0-or-later
"""EMOTE's graphs, written from its config: the maths of ``server/models`` as ONNX operators.

Three graphs, all for one clip (batch 1) of any length T:

``cnn``             waveform piece (1, S) [+ with GroupNorm, the first convolution's weight and
                    bias with the whole window's normalisation folded in] → CNN features
                    (1, C, L) at 50 fps;
``audio_encoder``   CNN features (1, C, L) + the interpolation to T frames → (T, 128) condition-
                    free features (feature projection, positional convolution, the transformer
                    with ONNX Runtime's MultiHeadAttention, the audio projection);
``decoder``         features (T, 128) + condition (T, 43) → FLAME motion (T, 103): the style
                    map, the regressor with its additive attention bias, SQUASH, FLINT.

Weights keep the official checkpoint names (``audio_model.model.…``, ``sequence_decoder.…``);
the one derived weight is the positional convolution's, folded from its weight norm
(:func:`prepare_weights`).
"""

from __future__ import annotations

import math

import numpy as np

from ..config import FLINT_DECODER_PREFIX, EmoteConfig, FlintConfig, Wav2Vec2Architecture
from ..models.slopes import alibi_slopes
from . import onnx_proto as proto
from .builder import Graph, GraphBuilder

AUDIO = "audio_model.model."
POS_CONV = f"{AUDIO}encoder.pos_conv_embed.conv"
POS_CONV_WEIGHT = f"{POS_CONV}.weight"  # folded from the weight norm's two parameters

SQRT2 = math.sqrt(2.0)
BATCH_NORM_EPS = 1e-5  # torch's default, FLINT's BatchNorm1d
LAYER_NORM_EPS = 1e-5  # nn.TransformerEncoderLayer's default
CONV_NORM_EPS = 1e-5  # the GroupNorm / LayerNorm of wav2vec2's convolutions (torch defaults)


# --------------------------------------------------------------------------------------------
# Building blocks


def gelu(g: GraphBuilder, x: str) -> str:
    """Exact GELU, x · ½ · (1 + erf(x / √2)), in the form ONNX Runtime fuses into one kernel."""
    erf = g.op("Erf", g.op("Div", x, g.const(SQRT2)))
    return g.op("Mul", g.op("Mul", x, g.op("Add", erf, g.const(1.0))), g.const(0.5))


def linear(g: GraphBuilder, x: str, weight: str, out_dim: int, in_dim: int,
           bias: str | None = None) -> str:
    """(T, in) → (T, out) with a torch-layout (out, in) weight."""
    inputs = [x, g.weight(weight, (out_dim, in_dim))]
    if bias is not None:
        inputs.append(g.weight(bias, (out_dim,)))
    return g.op("Gemm", *inputs, transB=1)


def dense(g: GraphBuilder, x: str, prefix: str, out_dim: int, in_dim: int,
          bias: bool = True) -> str:
    return linear(g, x, f"{prefix}.weight", out_dim, in_dim, f"{prefix}.bias" if bias else None)


def layer_norm(g: GraphBuilder, x: str, prefix: str, dim: int, eps: float) -> str:
    return g.op("LayerNormalization", x, g.weight(f"{prefix}.weight", (dim,)),
                g.weight(f"{prefix}.bias", (dim,)), axis=-1, epsilon=float(eps))


def heads_attention(g: GraphBuilder, q: str, k: str, v: str, n_heads: int, width: int,
                    bias: str | None = None) -> str:
    """softmax(q kᵀ / √d + bias) v over ``n_heads`` heads: (T, D) each → (T, D)."""
    head_dim = width // n_heads
    split = g.ints(-1, n_heads, head_dim)
    q = g.op("Mul", q, g.const(1.0 / math.sqrt(head_dim)))
    q = g.op("Transpose", g.op("Reshape", q, split), perm=[1, 0, 2])  # (H, T, d)
    k = g.op("Transpose", g.op("Reshape", k, split), perm=[1, 2, 0])  # (H, d, T)
    v = g.op("Transpose", g.op("Reshape", v, split), perm=[1, 0, 2])  # (H, T, d)
    scores = g.op("MatMul", q, k)  # (H, T, T)
    if bias is not None:
        scores = g.op("Add", scores, bias)
    out = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)  # (H, T, d)
    return g.op("Reshape", g.op("Transpose", out, perm=[1, 0, 2]), g.ints(-1, width))


def multi_head_attention(g: GraphBuilder, q: str, k: str, v: str, n_heads: int) -> str:
    """:func:`heads_attention` without a bias as ONNX Runtime's one ``MultiHeadAttention``
    kernel: the same maths, the scores in one buffer, softmax in place (measured: a 47 s
    window 2-4 % faster, 10 s the same; with the decoder's bias it gained nothing there)."""
    q, k, v = (g.op("Unsqueeze", x, g.ints(0)) for x in (q, k, v))  # (1, T, D)
    out = g.op("MultiHeadAttention", q, k, v, domain=proto.MICROSOFT, num_heads=n_heads)
    return g.op("Squeeze", out, g.ints(0))


def frame_count(g: GraphBuilder, x: str) -> str:
    """T of a (T, …) value, as a (1,) int64 tensor."""
    return g.op("Shape", x, start=0, end=1)


def temporal_bias(g: GraphBuilder, x: str, n_heads: int, period: int) -> str:
    """EMOTE's additive attention bias for the T frames of ``x``: (H, T, T),
    ``−m_h · floor(|i − j| / period)`` with the ALiBi slopes m_h (see models/attention.py)."""
    frames = g.op("Squeeze", frame_count(g, x), g.ints(0))
    index = g.op("Range", g.const(0, np.int64), frames, g.const(1, np.int64))  # (T,)
    distance = g.op("Abs", g.op("Sub", g.op("Unsqueeze", index, g.ints(1)),
                                g.op("Unsqueeze", index, g.ints(0))))  # (T, T)
    if period > 1:  # integer division: the floor for non-negative distances
        distance = g.op("Div", distance, g.const(period, np.int64))
    distance = g.op("Unsqueeze", g.op("Cast", distance, to=1), g.ints(0))  # (1, T, T) float
    slopes = -np.asarray(alibi_slopes(n_heads), np.float32).reshape(n_heads, 1, 1)
    return g.op("Mul", distance, g.const(slopes))


def encoder_layer(g: GraphBuilder, x: str, prefix: str, width: int, n_heads: int,
                  feedforward: int, bias: str) -> str:
    """Post-LN ``nn.TransformerEncoderLayer`` maths (our BiasedEncoderLayer), GELU, no dropout."""
    qkv = linear(g, x, f"{prefix}.self_attn.in_proj_weight", 3 * width, width,
                 f"{prefix}.self_attn.in_proj_bias")
    q, k, v = g.op_n("Split", qkv, outputs=3, axis=1)
    attended = dense(g, heads_attention(g, q, k, v, n_heads, width, bias),
                     f"{prefix}.self_attn.out_proj", width, width)
    x = layer_norm(g, g.op("Add", x, attended), f"{prefix}.norm1", width, LAYER_NORM_EPS)
    hidden = gelu(g, dense(g, x, f"{prefix}.linear1", feedforward, width))
    x = g.op("Add", x, dense(g, hidden, f"{prefix}.linear2", width, feedforward))
    return layer_norm(g, x, f"{prefix}.norm2", width, LAYER_NORM_EPS)


def to_channels(g: GraphBuilder, x: str) -> str:
    """(T, C) → (1, C, T) for the 1-D convolutions."""
    return g.op("Unsqueeze", g.op("Transpose", x, perm=[1, 0]), g.ints(0))


def from_channels(g: GraphBuilder, x: str) -> str:
    """(1, C, T) → (T, C)."""
    return g.op("Transpose", g.op("Squeeze", x, g.ints(0)), perm=[1, 0])


def conv1d(g: GraphBuilder, x: str, prefix: str, shape: tuple[int, int, int], bias: bool = True,
           **attributes: object) -> str:
    inputs = [x, g.weight(f"{prefix}.weight", shape)]
    if bias:
        inputs.append(g.weight(f"{prefix}.bias", (shape[0],)))
    return g.op("Conv", *inputs, kernel_shape=[shape[2]], **attributes)


# --------------------------------------------------------------------------------------------
# The audio encoder (steps 2-5)


def _conv_layer(g: GraphBuilder, x: str, arch: Wav2Vec2Architecture, i: int,
                weights: dict[str, np.ndarray]) -> str:
    """Convolution ``i`` over (1, C, 1, L): a 2-D convolution with a 1 × k kernel and its
    weights stored in the graph, which ONNX Runtime runs with its blocked-layout kernels."""
    prefix = f"{AUDIO}feature_extractor.conv_layers.{i}.conv"
    kernel, stride = arch.conv_kernel[i], arch.conv_stride[i]
    inputs = [x, g.stored(f"{prefix}.weight", weights[f"{prefix}.weight"][:, :, None, :])]
    if arch.conv_bias:
        inputs.append(g.stored(f"{prefix}.bias", weights[f"{prefix}.bias"]))
    return g.op("Conv", *inputs, kernel_shape=[1, kernel], strides=[1, stride])


def _layer_normed_conv(g: GraphBuilder, x: str, arch: Wav2Vec2Architecture, i: int) -> str:
    """The "layer" variant: LayerNorm over channels after each convolution, (1, C, 1, L)."""
    prefix = f"{AUDIO}feature_extractor.conv_layers.{i}.layer_norm"
    x = g.op("Transpose", x, perm=[0, 2, 3, 1])
    x = layer_norm(g, x, prefix, arch.conv_dim[i], CONV_NORM_EPS)
    return g.op("Transpose", x, perm=[0, 3, 1, 2])


def cnn_graph(arch: Wav2Vec2Architecture, weights: dict[str, np.ndarray]) -> Graph:
    """The convolutional feature encoder over a piece of waveform: (1, S) → (1, C, L).

    The convolutions are 2-D over (1, C, 1, L) with their weights stored in the graph (from
    ``weights``): ONNX Runtime lays constant 2-D convolution weights out for its blocked
    kernels, faster than its 1-D convolution (measured on a 47 s window: 4-5 % faster with
    ONNX Runtime 1.30 and 1.31, 2 % with 1.23).

    With GroupNorm ("group"), the first layer's normalisation comes from statistics of the
    whole window, not of the piece: it is a per-channel scale and shift of a linear layer, so
    the caller folds it into that layer's weight and bias and gives them with each run
    (``first_weight`` (C, 1, 1, k), ``first_bias`` (C,)), one multiply and add less per
    sample."""
    g = GraphBuilder("emote_cnn")
    wave = g.input("waveform", np.float32, [1, "samples"])
    x = g.op("Unsqueeze", wave, g.ints(1, 2))  # (1, 1, 1, S)
    for i in range(len(arch.conv_dim)):
        if arch.feat_extract_norm == "group" and i == 0:
            dim, kernel = arch.conv_dim[0], arch.conv_kernel[0]
            x = g.op("Conv", x, g.input("first_weight", np.float32, [dim, 1, 1, kernel]),
                     g.input("first_bias", np.float32, [dim]), kernel_shape=[1, kernel],
                     strides=[1, arch.conv_stride[0]])
        else:
            x = _conv_layer(g, x, arch, i, weights)
        if arch.feat_extract_norm == "layer":
            x = _layer_normed_conv(g, x, arch, i)
        x = gelu(g, x)
    x = g.op("Squeeze", x, g.ints(2))
    g.output(x, "cnn_features", [1, arch.conv_dim[-1], "length"])
    return g.build()


def _wav2vec2_layer(g: GraphBuilder, x: str, arch: Wav2Vec2Architecture, i: int) -> str:
    prefix = f"{AUDIO}encoder.layers.{i}"
    hidden, eps = arch.hidden_size, arch.layer_norm_eps

    def attention(h: str) -> str:
        q, k, v = (dense(g, h, f"{prefix}.attention.{name}_proj", hidden, hidden)
                   for name in ("q", "k", "v"))
        out = multi_head_attention(g, q, k, v, arch.num_attention_heads)
        return dense(g, out, f"{prefix}.attention.out_proj", hidden, hidden)

    def feed_forward(h: str) -> str:
        h = gelu(g, dense(g, h, f"{prefix}.feed_forward.intermediate_dense",
                          arch.intermediate_size, hidden))
        return dense(g, h, f"{prefix}.feed_forward.output_dense", hidden, arch.intermediate_size)

    if arch.do_stable_layer_norm:  # pre-LN
        x = g.op("Add", x, attention(layer_norm(g, x, f"{prefix}.layer_norm", hidden, eps)))
        normed = layer_norm(g, x, f"{prefix}.final_layer_norm", hidden, eps)
        return g.op("Add", x, feed_forward(normed))
    x = layer_norm(g, g.op("Add", x, attention(x)), f"{prefix}.layer_norm", hidden, eps)
    return layer_norm(g, g.op("Add", x, feed_forward(x)), f"{prefix}.final_layer_norm",
                      hidden, eps)


def audio_encoder_graph(config: EmoteConfig) -> Graph:
    """CNN features (1, C, L) → (T, feature_dim): EMOTE resamples the CNN features linearly to
    exactly T frames (``align_corners=True``) before the feature projection; the caller gives
    the interpolation as two index vectors and their weights (:func:`interpolation`)."""
    arch = config.audio
    hidden = arch.hidden_size
    channels = arch.conv_dim[-1]
    g = GraphBuilder("emote_audio_encoder")
    cnn = g.input("cnn_features", np.float32, [1, channels, "length"])
    lower = g.input("lower", np.int64, ["frames"])
    upper = g.input("upper", np.int64, ["frames"])
    lower_weight = g.input("lower_weight", np.float32, ["frames", 1])
    upper_weight = g.input("upper_weight", np.float32, ["frames", 1])
    x = from_channels(g, cnn)  # (L, C)
    x = g.op("Add", g.op("Mul", g.op("Gather", x, lower, axis=0), lower_weight),
             g.op("Mul", g.op("Gather", x, upper, axis=0), upper_weight))  # (T, C)
    x = layer_norm(g, x, f"{AUDIO}feature_projection.layer_norm", channels, arch.layer_norm_eps)
    x = dense(g, x, f"{AUDIO}feature_projection.projection", hidden, channels)  # (T, 768)

    kernel, groups = arch.num_conv_pos_embeddings, arch.num_conv_pos_embedding_groups
    pos = g.op("Conv", to_channels(g, x), g.weight(POS_CONV_WEIGHT,
                                                   (hidden, hidden // groups, kernel)),
               g.weight(f"{POS_CONV}.bias", (hidden,)), kernel_shape=[kernel],
               pads=[kernel // 2, kernel // 2], group=groups)
    if kernel % 2 == 0:  # wav2vec2's "same" padding drops the extra last frame
        pos = g.op("Slice", pos, g.ints(0), g.ints(-1), g.ints(2))
    x = g.op("Add", x, from_channels(g, gelu(g, pos)))
    if not arch.do_stable_layer_norm:
        x = layer_norm(g, x, f"{AUDIO}encoder.layer_norm", hidden, arch.layer_norm_eps)
    for i in range(arch.num_hidden_layers):
        x = _wav2vec2_layer(g, x, arch, i)
    if arch.do_stable_layer_norm:
        x = layer_norm(g, x, f"{AUDIO}encoder.layer_norm", hidden, arch.layer_norm_eps)
    g.output(dense(g, x, "sequence_encoder.linear", config.feature_dim, hidden), "features",
             ["frames", config.feature_dim])
    return g.build()


def interpolation(length: int, frames: int) -> dict[str, np.ndarray]:
    """Inputs of :func:`audio_encoder_graph` for resampling ``length`` CNN frames to ``frames``:
    torch's ``interpolate(mode="linear", align_corners=True)``, with its float32 arithmetic."""
    scale = np.float32((length - 1) / (frames - 1)) if frames > 1 else np.float32(0.0)
    source = scale * np.arange(frames, dtype=np.float32)
    lower = np.floor(source).astype(np.int64)
    upper = lower + (lower < length - 1)
    upper_weight = np.clip(source - lower.astype(np.float32), 0.0, 1.0).astype(np.float32)
    return {"lower": lower, "upper": upper,
            "lower_weight": (np.float32(1.0) - upper_weight)[:, None],
            "upper_weight": upper_weight[:, None]}


# --------------------------------------------------------------------------------------------
# The decoder (steps 6-11)


def _repeat_frames(g: GraphBuilder, x: str, channels: int) -> str:
    """(1, C, n) → (1, C, 2n), each frame twice (``repeat_interleave(2, dim=2)``)."""
    pair = g.op("Unsqueeze", x, g.ints(3))  # (1, C, n, 1)
    return g.op("Reshape", g.op("Concat", pair, pair, axis=3), g.ints(1, channels, -1))


def _batch_norm(g: GraphBuilder, x: str, prefix: str, dim: int) -> str:
    return g.op("BatchNormalization", x,
                *(g.weight(f"{prefix}.{name}", (dim,))
                  for name in ("weight", "bias", "running_mean", "running_var")),
                epsilon=BATCH_NORM_EPS)


def flint_decoder(g: GraphBuilder, latents: str, c: FlintConfig, prefix: str) -> str:
    """FLINT's decoder: latents (n, latent_dim) → motion (n · 2^q, input_dim)."""
    x = to_channels(g, latents)  # (1, latent, n)
    x = g.op("ConvTranspose", x, g.weight(f"{prefix}expander.0.0.weight",
                                          (c.latent_dim, c.feature_dim, 5)),
             g.weight(f"{prefix}expander.0.0.bias", (c.feature_dim,)), kernel_shape=[5],
             strides=[2], pads=[2, 2], output_padding=[1])  # doubles time
    x = _batch_norm(g, g.op("LeakyRelu", x, alpha=0.2), f"{prefix}expander.0.2", c.feature_dim)
    for i in range(1, c.quant_factor):
        x = g.op("Pad", x, g.ints(0, 0, 2, 0, 0, 2), mode="edge")  # replicate padding
        x = conv1d(g, x, f"{prefix}expander.{i}.0", (c.feature_dim, c.feature_dim, 5))
        x = _batch_norm(g, g.op("LeakyRelu", x, alpha=0.2), f"{prefix}expander.{i}.2",
                        c.feature_dim)
        x = _repeat_frames(g, x, c.feature_dim)
    x = dense(g, from_channels(g, x), f"{prefix}decoder_linear_embedding", c.feature_dim,
              c.feature_dim)
    bias = temporal_bias(g, x, c.n_heads, 1)
    for i in range(c.num_layers):
        x = encoder_layer(g, x, f"{prefix}decoder_transformer.layers.{i}", c.feature_dim,
                          c.n_heads, c.dim_feedforward, bias)
    x = dense(g, x, f"{prefix}post_transformer_linear", c.feature_dim, c.feature_dim)
    k = c.smooth_kernel
    x = conv1d(g, to_channels(g, x), f"{prefix}cross_smooth_layer",
               (c.input_dim, c.feature_dim, k), pads=[k // 2, k // 2])
    return from_channels(g, x)


def decoder_graph(config: EmoteConfig) -> Graph:
    """Features (T, feature_dim) + condition (T, C) → FLAME motion (T, input_dim)."""
    c = config
    width = 2 * c.feature_dim
    group = c.flint.frames_per_latent
    g = GraphBuilder("emote_decoder")
    audio = g.input("features", np.float32, ["frames", c.feature_dim])
    condition = g.input("condition", np.float32, ["frames", c.condition_dim])
    style = dense(g, condition, "sequence_decoder.obj_vector.map", c.feature_dim,
                  c.condition_dim, c.style_bias)
    x = g.op("Concat", audio, style, axis=1)  # (T, 256): audio first
    bias = temporal_bias(g, x, c.n_heads, c.period)
    for i in range(c.num_layers):
        x = encoder_layer(g, x, f"sequence_decoder.bert_decoder.layers.{i}", width, c.n_heads,
                          c.dim_feedforward, bias)
    x = dense(g, x, "sequence_decoder.decoder", c.feature_dim, width)  # (T, 128)
    # SQUASH: zero frames at the end up to a multiple of 8, then 8 frames → one latent.
    frames = frame_count(g, x)
    missing = g.op("Mod", g.op("Neg", frames), g.const([group], np.int64))
    pads = g.op("Concat", g.ints(0, 0), missing, g.ints(0), axis=0)
    x = g.op("Reshape", g.op("Pad", x, pads), g.ints(-1, group * c.feature_dim))
    latents = dense(g, x, "sequence_decoder.squasher_2.linear", c.flint.latent_dim,
                    group * c.feature_dim)
    motion = flint_decoder(g, latents, c.flint, FLINT_DECODER_PREFIX)
    g.output(g.op("Slice", motion, g.ints(0), frames, g.ints(0)), "motion",
             ["frames", c.flint.input_dim])
    return g.build()


# --------------------------------------------------------------------------------------------


def emote_graphs(config: EmoteConfig, weights: dict[str, np.ndarray]) -> dict[str, Graph]:
    """The graphs of ``config``, by name; ``weights`` (:func:`prepare_weights`) gives the CNN
    the weights it stores."""
    return {"cnn": cnn_graph(config.audio, weights),
            "audio_encoder": audio_encoder_graph(config), "decoder": decoder_graph(config)}


def prepare_weights(config: EmoteConfig, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The graphs' weights from a checked state dict: float32, C-contiguous, with the positional
    convolution's weight folded from its weight norm, ``g · v / ‖v‖`` (norm over every dim but
    the kernel's, as ``torch.nn.utils.weight_norm(dim=2)``)."""
    weights = {k: np.ascontiguousarray(v, np.float32) for k, v in state.items()}
    magnitude = weights.pop(f"{POS_CONV}.parametrizations.weight.original0").astype(np.float64)
    direction = weights.pop(f"{POS_CONV}.parametrizations.weight.original1").astype(np.float64)
    norm = np.sqrt((direction**2).sum(axis=(0, 1), keepdims=True))
    weights[POS_CONV_WEIGHT] = (magnitude * direction / norm).astype(np.float32)
    return weights
