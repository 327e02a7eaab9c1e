# SPDX-License-Identifier: GPL-3.0-or-later
"""Exports for game engines: a take's ARKit weights in Live Link Face's CSV layout
(:mod:`.livelink`), and the FLAME → ARKit-52 approximation used when no character mapping is
given (:mod:`.flame_arkit`)."""
