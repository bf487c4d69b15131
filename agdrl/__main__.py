"""``python -m agdrl`` is the ``agdrl`` command."""

import sys

from agdrl.cli import main

sys.exit(main())
