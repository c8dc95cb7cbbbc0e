"""The version, defined once: pyproject.toml, ``fnnet.__version__``, checkpoints and the command
line all read it from here."""

__version__ = "0.1.0"
