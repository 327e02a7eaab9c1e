# SPDX-License-Identifier: GPL-3.0-or-later
"""Attention must be softmax(QKᵀ/√d + bias)V in every mode (the fast-path trap)."""

import math

import pytest
import torch

from server.models.attention import BiasedEncoderLayer, alibi_slopes, temporal_bias
from tests.builders import random_model, tiny_config


def test_slopes_for_eight_heads_halve_from_one_half():
    assert alibi_slopes(8) == pytest.approx([2.0 ** -(h + 1) for h in range(8)])
    assert alibi_slopes(4) == pytest.approx([2.0 ** (-2 * (h + 1)) for h in range(4)])
    assert len(alibi_slopes(6)) == 6


def test_bias_floors_distance_by_period():
    bias = temporal_bias(70, 8, period=30, dtype=torch.float64)
    assert bias.shape == (8, 70, 70)
    assert bias[0, 0, 29] == 0 and bias[0, 0, 30] == -0.5 and bias[0, 65, 0] == -1.0
    assert bias[7, 0, 60] == pytest.approx(-2 / 256)
    assert torch.equal(bias, bias.transpose(1, 2))
    flint = temporal_bias(10, 8, period=1, dtype=torch.float64)
    assert flint[1, 2, 9] == pytest.approx(-7 * 0.25)


def explicit_layer(layer: BiasedEncoderLayer, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The layer's maths written out in float64, nothing from torch.nn.functional attention."""
    p = {k: v.detach().double() for k, v in layer.state_dict().items()}
    x = x.double()
    batch, frames, dim = x.shape
    heads = layer.self_attn.n_heads
    qkv = x @ p["self_attn.in_proj_weight"].T + p["self_attn.in_proj_bias"]
    q, k, v = qkv.split(dim, dim=-1)

    def split(t):
        return t.reshape(batch, frames, heads, dim // heads).permute(0, 2, 1, 3)

    q, k, v = split(q), split(k), split(v)
    logits = q @ k.transpose(-1, -2) / math.sqrt(dim // heads) + bias.double()[None]
    weights = torch.exp(logits - logits.amax(-1, keepdim=True))
    weights = weights / weights.sum(-1, keepdim=True)
    attended = (weights @ v).permute(0, 2, 1, 3).reshape(batch, frames, dim)
    attended = attended @ p["self_attn.out_proj.weight"].T + p["self_attn.out_proj.bias"]

    def norm(t, name):
        mu = t.mean(-1, keepdim=True)
        var = t.var(-1, unbiased=False, keepdim=True)
        return (t - mu) / torch.sqrt(var + 1e-5) * p[f"{name}.weight"] + p[f"{name}.bias"]

    h = norm(x + attended, "norm1")
    ff = h @ p["linear1.weight"].T + p["linear1.bias"]
    ff = 0.5 * ff * (1 + torch.erf(ff / math.sqrt(2)))
    ff = ff @ p["linear2.weight"].T + p["linear2.bias"]
    return norm(h + ff, "norm2")


@pytest.mark.parametrize("period,frames", [(30, 97), (1, 40)])
@pytest.mark.parametrize("mode", ["train-no-dropout", "eval", "eval+no_grad", "inference_mode"])
def test_layer_equals_explicit_float64_maths(mode, period, frames):
    torch.manual_seed(1)
    layer = BiasedEncoderLayer(64, 8, 96, dropout=0.0)
    x = torch.randn(2, frames, 64)
    bias = temporal_bias(frames, 8, period)
    expected = explicit_layer(layer, x, bias)
    if mode == "train-no-dropout":
        out = layer.train()(x, bias)
    elif mode == "eval":
        out = layer.eval()(x, bias)
    elif mode == "eval+no_grad":
        with torch.no_grad():
            out = layer.eval()(x, bias)
    else:
        with torch.inference_mode():
            out = layer.eval()(x, bias)
    assert (out.double() - expected).abs().max().item() < 1e-6


def test_bias_really_reaches_the_logits():
    """A strongly decaying bias must change the output; a masked-as-boolean bias would not
    decay smoothly. Compare against the same layer without bias."""
    torch.manual_seed(2)
    layer = BiasedEncoderLayer(64, 8, 96).eval()
    x = torch.randn(1, 50, 64)
    with torch.no_grad():
        biased = layer(x, temporal_bias(50, 8, 1))
        unbiased = layer(x, None)
        uniform = layer(x, torch.full((8, 50, 50), -3.0))  # a constant shift cancels in softmax
    assert (biased - unbiased).abs().max() > 1e-2
    assert torch.allclose(uniform, unbiased, atol=1e-5)


def test_fast_path_trap_cannot_happen_in_the_model():
    """The whole regressor gives the same numbers in eval+no_grad (where torch's native
    TransformerEncoder fast path would kick in) as in autograd mode with dropout off."""
    model = random_model(tiny_config(dropout=0.0))
    features = torch.randn(1, 80, model.config.feature_dim)
    condition = torch.zeros(1, 80, model.config.condition_dim)
    condition[..., 1] = condition[..., 10] = condition[..., 11] = 1
    model.train()
    for module in model.modules():  # keep BatchNorm on its running statistics
        if isinstance(module, torch.nn.BatchNorm1d):
            module.eval()
    with_grad = model.decode(features, condition)
    model.eval()
    with torch.no_grad():
        fast = model.decode(features, condition)
    assert torch.allclose(with_grad, fast, atol=1e-6)
    assert not any(isinstance(m, torch.nn.TransformerEncoderLayer) for m in model.modules())


def test_torch_native_layer_slow_path_matches_ours():
    """Same weights in nn.TransformerEncoderLayer (training mode, dropout 0: the documented
    float-mask semantics) and in ours: identical results, so state dicts mean the same."""
    torch.manual_seed(3)
    ours = BiasedEncoderLayer(32, 8, 64, dropout=0.0)
    native = torch.nn.TransformerEncoderLayer(32, 8, 64, dropout=0.0, activation="gelu",
                                              batch_first=True)
    native.load_state_dict(ours.state_dict())
    x = torch.randn(2, 45, 32)
    bias = temporal_bias(45, 8, 30)
    native.train()
    reference = native(x, src_mask=bias.repeat(2, 1, 1).reshape(2 * 8, 45, 45))
    assert torch.allclose(ours(x, bias), reference, atol=1e-5)
