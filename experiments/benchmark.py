"""``python -m experiments.benchmark`` still runs the benchmark, which lives in ``fnnet.bench``."""
from fnnet.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
