"""``python -m experiments.benchmark`` still runs the benchmark, which lives in ``fnnet.bench``."""
import sys

from fnnet.bench import main

if __name__ == "__main__":
    sys.argv[0] = "python -m fnnet.bench"  # the program name argparse shows
    sys.exit(main())
