"""Test-wide settings: float64 available (gradient checks run in it), hypothesis without deadlines
(first calls compile), and a fixed profile so CI is reproducible."""

import os

import jax
from hypothesis import settings

jax.config.update("jax_enable_x64", True)

settings.register_profile("ci", deadline=None, max_examples=25, derandomize=True, print_blob=True)
settings.register_profile("dev", deadline=None, max_examples=25)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
