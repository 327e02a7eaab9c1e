# SPDX-License-Identifier: GPL-3.0-or-later
"""The head slopes of EMOTE's and FLINT's additive attention bias (standard library only: the
torch modules and the ONNX graphs both use them)."""

from __future__ import annotations

import math


def alibi_slopes(n_heads: int) -> list[float]:
    """ALiBi head slopes: 2^(−8(h+1)/n) for a power of two n (8 heads: 1/2 … 1/256).

    For other head counts, the slopes of the next lower power of two followed by every other
    slope of the next higher one (Press et al., 2022).
    """
    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
        return [start ** (i + 1) for i in range(n)]

    if math.log2(n_heads).is_integer():
        return power_of_two(n_heads)
    lower = 2 ** math.floor(math.log2(n_heads))
    return power_of_two(lower) + alibi_slopes(2 * lower)[0::2][: n_heads - lower]
