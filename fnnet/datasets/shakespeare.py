"""The "tiny Shakespeare" corpus of char-rnn and nanoGPT, as character-level token ids.

One plain-text file, ``input.txt``, of 1,115,394 characters (about 40,000 lines of Shakespeare's
plays), checked by its size and SHA-256 (``SIZE``, ``SHA256``) wherever it comes from.

Where it is looked for, the way MNIST is (``fnnet.datasets.sources``): a folder named by the
caller (``data_dir``) is the only place looked at, as ``data_dir/tinyshakespeare/input.txt`` (or
``data_dir/input.txt``, the folder holding the file itself); no other folder, no download.
Without one, the first of these that holds the file:

1. ``$FNNET_DATA_DIR/tinyshakespeare/input.txt`` (``FNNET_DATA_DIR`` is a root with one folder per
   dataset);
2. ``<cache>/shakespeare/input.txt``, ``<cache>`` being ``cache_dir()`` (``$FNNET_CACHE_DIR``,
   else ``$XDG_CACHE_HOME/fnnet``, else ``~/.cache/fnnet``), where a download goes.

When neither holds it and ``download`` is true, it is downloaded once into the cache from
``MIRRORS`` (or ``$FNNET_SHAKESPEARE_MIRROR``, base URLs to which ``input.txt`` is appended)
through ``fnnet.datasets.download``: within a deadline, cut off past ``SIZE`` bytes, written to a
temporary file beside its target and renamed into place only once its SHA-256 matches.

A file found with another size or SHA-256 is refused (``ChecksumError``, saying what was
expected); its size is checked before anything is read, and no more than ``SIZE`` bytes are ever
read.

The tokens: the vocabulary is the sorted set of the text's characters (65 of them); a character's
id is its index there. ``train`` is the first 90% of the ids and ``validation`` the last 10%, as
nanoGPT's ``shakespeare_char`` splits them (1,003,854 and 111,540 tokens).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fnnet.datasets.download import ChecksumError, download_first
from fnnet.datasets.sources import DatasetNotFoundError, cache_dir
from fnnet.io import open_regular

__all__ = ["CACHE_FOLDER", "FILENAME", "FOLDER", "MIRRORS", "MIRROR_ENV", "SHA256", "SIZE",
           "CharCorpus", "ShakespeareNotFoundError", "load_shakespeare", "search_paths"]

FOLDER = "tinyshakespeare"  # under $FNNET_DATA_DIR and data_dir
CACHE_FOLDER = "shakespeare"  # under the cache
FILENAME = "input.txt"
SIZE = 1_115_394  # bytes (and characters: the file is ASCII)
SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
# Base URLs tried in order; the file's URL is the base URL followed by FILENAME.
MIRRORS: tuple[str, ...] = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/",
)
MIRROR_ENV = "FNNET_SHAKESPEARE_MIRROR"
TRAIN_FRACTION = 0.9

Folder = str | os.PathLike | None


class ShakespeareNotFoundError(DatasetNotFoundError):
    """``input.txt`` is in none of the searched places and could not be downloaded (a
    ``DatasetNotFoundError``, so a ``FileNotFoundError``)."""

    def __init__(self, text: str):
        FileNotFoundError.__init__(self, text)
        self.details = ()
        self.text = text

    def message(self, words: str = "library", given_as: str | None = None,
                remedy: str | None = None) -> str:
        """The message (the same in every wording)."""
        return self.text


class CharCorpus(NamedTuple):
    """A character-level corpus: ``text`` (``str``), ``vocab`` (its sorted distinct characters,
    a tuple of one-character strings; a character's token id is its index), and the token ids of
    ``train`` (the first 90%) and ``validation`` (the last 10%), int32 numpy arrays.
    ``encode`` and ``decode`` map between strings and ids."""

    text: str
    vocab: tuple[str, ...]
    train: np.ndarray
    validation: np.ndarray

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        """The token ids of ``text``, an int32 array; ``ValueError`` naming the characters that
        are not in the vocabulary."""
        return _encode(text, self.vocab)

    def decode(self, ids) -> str:
        """The string whose token ids are ``ids`` (any integer array-like, any shape, read in C
        order); ``ValueError`` for an id outside ``0 .. len(vocab) − 1``."""
        ids = np.asarray(ids)
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"decode: token ids must be integers, got dtype {ids.dtype}")
        ids = ids.reshape(-1).astype(np.int64)
        bad = (ids < 0) | (ids >= len(self.vocab))
        if bad.any():
            first = int(np.argmax(bad))
            raise ValueError(f"decode: token id {int(ids[first])} at position {first} is outside "
                             f"the vocabulary of {len(self.vocab)} characters (ids "
                             f"0..{len(self.vocab) - 1}); {int(bad.sum())} ids are")
        codes = np.array([ord(c) for c in self.vocab], np.uint32)[ids]
        return codes.astype("<u4").tobytes().decode("utf-32-le")


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


def _encode(text: str, vocab: Sequence[str]) -> np.ndarray:
    if not isinstance(text, str):
        raise TypeError(f"encode: expected a str, got {type(text).__name__}")
    codes = _code_points(text)
    vocab_codes = np.array([ord(c) for c in vocab], np.int64)
    table = np.full(int(vocab_codes.max(initial=0)) + 2, -1, np.int32)
    table[vocab_codes] = np.arange(len(vocab), dtype=np.int32)
    ids = table[np.minimum(codes, len(table) - 1)]  # the last slot is always -1: out of range
    if (ids < 0).any():
        missing = sorted(set(text) - set(vocab))
        shown = ", ".join(repr(c) for c in missing[:20]) + (" ..." if len(missing) > 20 else "")
        raise ValueError(f"encode: {len(missing)} character(s) not in the vocabulary of "
                         f"{len(vocab)}: {shown}")
    return ids


def search_paths(data_dir: Folder = None) -> list[tuple[str, Path]]:
    """The files looked for, in order, as ``(label, path)`` pairs: in ``data_dir`` alone when it
    is given, else ``$FNNET_DATA_DIR/tinyshakespeare/input.txt`` (when the variable is set) and
    the cache's ``shakespeare/input.txt``."""
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        return [("data_dir argument", root / FOLDER / FILENAME),
                ("data_dir argument", root / FILENAME)]
    paths = []
    if os.environ.get("FNNET_DATA_DIR"):
        root = Path(os.environ["FNNET_DATA_DIR"]).expanduser()
        paths.append((f"$FNNET_DATA_DIR/{FOLDER}", root / FOLDER / FILENAME))
    paths.append(("cache", cache_dir() / CACHE_FOLDER / FILENAME))
    return paths


def _find(data_dir: Folder) -> Path | None:
    for _label, path in search_paths(data_dir):
        if path.is_file():
            return path
    return None


def _mirror_urls(mirrors) -> list[str]:
    if mirrors is None:
        env = os.environ.get(MIRROR_ENV, "").strip()
        mirrors = env if env else MIRRORS
    if isinstance(mirrors, str):
        mirrors = mirrors.replace(",", " ").split()
    return [(m if m.endswith("/") else m + "/") + FILENAME for m in mirrors]


def _not_found(data_dir: Folder, download: bool, urls: list[str], failures: list[str]) -> str:
    searched = "; ".join(f"{label}: {path}" for label, path in search_paths(data_dir))
    if data_dir is not None:
        return (f"tiny Shakespeare not found in data_dir {Path(data_dir).expanduser()} (looked "
                f"for {searched}): data_dir is the only place looked at (no $FNNET_DATA_DIR, "
                f"cache or download). Put {FILENAME} ({SIZE:,} bytes, SHA-256 {SHA256}) in "
                f"{Path(data_dir).expanduser() / FOLDER}/, or leave out data_dir to search "
                f"$FNNET_DATA_DIR/{FOLDER} and the cache (and download).")
    lines = [f"tiny Shakespeare not found: searched {searched}"
             + ("" if os.environ.get("FNNET_DATA_DIR") else " ($FNNET_DATA_DIR: not set)") + "."]
    if not download:
        lines.append("Downloading is disabled (download=False).")
    else:
        lines.append(f"Downloading into {cache_dir() / CACHE_FOLDER} failed: "
                     + ("; ".join(failures) or "no mirrors configured") + ".")
    lines.append(f"To use the file you have ({FILENAME}, {SIZE:,} bytes, SHA-256 {SHA256}): "
                 f'pass data_dir="/some/root" with it in /some/root/{FOLDER}/, set '
                 f"FNNET_DATA_DIR=/some/root likewise, or copy it into "
                 f"{cache_dir() / CACHE_FOLDER}/. Or point the downloader at another mirror with "
                 f"${MIRROR_ENV}=<base URL> (tried: {', '.join(urls) or 'none'}).")
    return "\n".join(lines)


def _read_checked(path: Path) -> bytes:
    """The bytes of ``path`` if it is the published file: its size checked before reading, at
    most ``SIZE`` bytes read, then its SHA-256."""
    expected = f"expected the published {FILENAME} of {SIZE:,} bytes with SHA-256 {SHA256}"
    with open_regular(path, f"the published {FILENAME}", ChecksumError) as f:
        size = os.fstat(f.fileno()).st_size  # of the file opened: a FIFO is refused, not read
        if size != SIZE:
            raise ChecksumError(f"{path}: {size:,} bytes, {expected}; replace it with the "
                                f"published file (or delete it{_cache_hint(path)})")
        data = f.read(SIZE + 1)  # bounded: a file grown since fstat() is caught, not read on
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != SIZE or digest != SHA256:
        raise ChecksumError(f"{path}: SHA-256 {digest} ({len(data):,} bytes read), {expected}; "
                            f"replace it with the published file (or delete it"
                            f"{_cache_hint(path)})")
    return data


def _cache_hint(path: Path) -> str:
    cached = cache_dir() / CACHE_FOLDER / FILENAME
    return ", and it is downloaded again" if path == cached else ""


def load_shakespeare(data_dir: Folder = None, download: bool = True, *,
                     mirrors: Sequence[str] | str | None = None) -> CharCorpus:
    """The tiny Shakespeare corpus as a ``CharCorpus``: ``text``, ``vocab`` (its 65 sorted
    characters), ``train`` and ``validation`` (int32 token ids, the first 90% and the last 10%),
    ``encode`` and ``decode``.

    A ``data_dir`` given is the only folder looked at: ``data_dir/tinyshakespeare/input.txt``
    (or ``data_dir/input.txt``); nothing is downloaded. Without one, the file is taken from
    ``$FNNET_DATA_DIR/tinyshakespeare/input.txt``, else the cache's ``shakespeare/input.txt``
    (``cache_dir()``, by default ``~/.cache/fnnet``); when neither holds it and ``download`` is
    true, it is downloaded into the cache from ``mirrors`` (base URLs; default
    ``$FNNET_SHAKESPEARE_MIRROR`` if set, else ``MIRRORS``), its size and SHA-256 checked before
    it is kept.

    Raises ``ShakespeareNotFoundError`` (a ``DatasetNotFoundError``, so a
    ``FileNotFoundError``) listing where it looked and how to point fnnet at a local copy;
    ``ChecksumError`` (a ``ValueError``) when a file found or downloaded is not the published one
    (its size is checked before it is read), saying the size and SHA-256 expected.
    """
    urls = _mirror_urls(mirrors)
    path = _find(data_dir)
    failures: list[str] = []
    if path is None and download and data_dir is None:
        target = cache_dir() / CACHE_FOLDER
        created = not target.exists()
        target.mkdir(parents=True, exist_ok=True)
        try:
            failures = download_first(urls, target / FILENAME, (SHA256,), SIZE,
                                      f"{FILENAME} of tiny Shakespeare")
        finally:
            if created and not any(target.iterdir()):
                target.rmdir()
        path = _find(data_dir)
    if path is None:
        raise ShakespeareNotFoundError(_not_found(data_dir, download, urls, failures))
    try:
        text = _read_checked(path).decode("utf-8")
    except UnicodeDecodeError as exc:  # only reachable with a patched SHA256 (tests)
        raise ChecksumError(f"{path}: not UTF-8 text ({exc})") from None
    vocab = tuple(sorted(set(text)))
    ids = _encode(text, vocab)
    split = int(len(ids) * TRAIN_FRACTION)
    return CharCorpus(text, vocab, ids[:split].copy(), ids[split:].copy())
