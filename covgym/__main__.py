"""``python -m covgym ...`` (so ``torchrun ... -m covgym train ...`` works)."""

import sys

from covgym.cli import main

sys.exit(main())
