# SPDX-License-Identifier: GPL-3.0-or-later
"""Built-in demo: procedural head, synthetic corpus and demo model."""
