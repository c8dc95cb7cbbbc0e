"""``python -m fnnet.cli``: the ``fnnet`` command line."""

import sys

from . import main

sys.exit(main())
