"""Runnable experiments, one per derivation in the notes: ``python -m experiments.NAME --out DIR``."""
