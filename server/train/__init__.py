# SPDX-License-Identifier: GPL-3.0-or-later
"""Training: FLINT and EMOTE stage 1 (stage 2 is being built). Imports Lightning; the
inference path never imports this package."""
