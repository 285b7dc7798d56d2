"""``python -m vna.cli``: how the supervisor starts its worker processes (vna/supervisor.py)."""

import sys

from vna.cli import main

sys.exit(main())
