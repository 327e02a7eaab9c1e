# SPDX-License-Identifier: GPL-3.0-or-later
"""``python -m server``: the command line and the worker entry point."""

import sys

from server.cli import main

sys.exit(main())
