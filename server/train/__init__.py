# SPDX-License-Identifier: GPL-3.0-or-later
"""Training: FLINT and EMOTE stages 1 and 2 (torch, Lightning). The inference path never
imports this package."""
