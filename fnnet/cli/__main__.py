"""``python -m fnnet.cli``: the ``fnnet`` command line."""

import sys

from . import console

sys.exit(console())
