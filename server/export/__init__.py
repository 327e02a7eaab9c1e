# SPDX-License-Identifier: GPL-3.0-or-later
"""Exports for game engines: a take's ARKit weights in Live Link Face's CSV layout
(:mod:`.livelink`), from the FLAME → ARKit-52 approximation measured on the head's mesh
(:mod:`.flame_arkit`) or, with a character mapping, from the character's own ARKit keys as
:mod:`server.retarget` solves them (:mod:`.character`)."""
