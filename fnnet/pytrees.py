"""The NamedTuple types that may be stored in a checkpoint, and small pytree helpers.

A params or state type registers itself where it is defined::

    @register_namedtuple
    class DenseParams(NamedTuple): ...

Checkpoints (``fnnet.checkpoints``) build a NamedTuple back only from this registry, by name, never
from a name found in a file. This module sits at the bottom of the package and imports nothing of
fnnet's, so every layer can register its types without knowing about files.
"""

from __future__ import annotations

__all__ = ["register_namedtuple", "registered_namedtuple"]

_NAMEDTUPLES: dict[str, type] = {}


def register_namedtuple(cls: type) -> type:
    """Allow NamedTuple class ``cls`` in checkpoints, under its ``__name__``. Usable as decorator.

    Raises:
        TypeError: ``cls`` is not a NamedTuple class.
        ValueError: another class of the same name is registered already.
    """
    if not (isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields")):
        raise TypeError(f"register_namedtuple: {cls!r} is not a NamedTuple class")
    other = _NAMEDTUPLES.get(cls.__name__)
    if other is not None and other is not cls:
        raise ValueError(
            f"register_namedtuple: another NamedTuple named {cls.__name__!r} is already "
            f"registered ({other.__module__}.{other.__qualname__})"
        )
    _NAMEDTUPLES[cls.__name__] = cls
    return cls


def registered_namedtuple(name: str) -> type | None:
    """The NamedTuple class registered under ``name``, or ``None``."""
    return _NAMEDTUPLES.get(name)
