"""``python -m fnnet.bench``: run the benchmark (see ``fnnet.bench``)."""

import sys

from . import main

sys.argv[0] = "python -m fnnet.bench"  # the program name argparse shows
sys.exit(main())
