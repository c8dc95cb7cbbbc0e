"""Where the datasets come from: their files, published checksums and mirrors, and the folders
searched for them.

Both datasets use the same four file names (``FILES``). A folder named by the caller
(``data_dir``) is the only place looked at: no other folder, no download. Without one, the first
*location* that holds all four files is used, so files from two different places are never
mixed. Locations, in this order:

1. ``$FNNET_DATA_DIR/<dataset>/``: ``FNNET_DATA_DIR`` is a *root* with one folder per dataset,
   ``mnist/`` and ``fashion-mnist/``; the two are never mixed;
2. ``<cache>/<dataset>/`` where ``<cache>`` is ``$FNNET_CACHE_DIR`` if set, else
   ``$XDG_CACHE_HOME/fnnet``, else ``~/.cache/fnnet`` (where downloads go).

In each location a file may also be present un-gzipped, without its ``.gz`` suffix
(``train-images-idx3-ubyte``); the gzipped name is preferred when both exist.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "CLASS_NAMES", "DATASETS", "FILES", "IMAGE_SHAPE", "MIRRORS", "MIRROR_ENV", "SHA256", "SIZES",
    "SPLIT_SIZES",
    "DatasetNotFoundError", "cache_dir",
    "check_name", "file_in", "find_complete", "mirrors_for", "not_found_message", "search_dirs",
]


class DatasetNotFoundError(FileNotFoundError):
    """The dataset files are in none of the searched locations and could not be downloaded.

    ``message(words)`` says the same in the words of the library (``"library"``, the message
    raised) or of the command line (``"cli"``: ``--data-dir``, ``--no-download``), on one line.
    """

    def __init__(self, name: str, data_dir: Folder = None, download: bool = True,
                 mirrors: Sequence[str] = (), failures: Sequence[str] = ()):
        self.details = (name, data_dir, download, list(mirrors), list(failures))
        super().__init__(not_found_message(*self.details))

    def message(self, words: str = "library", given_as: str | None = None,
                remedy: str | None = None) -> str:
        """The message in ``words``; ``given_as`` names where an explicit folder came from and
        ``remedy`` says what to do about it (see ``not_found_message``)."""
        return not_found_message(*self.details, words=words, given_as=given_as, remedy=remedy)


DATASETS = ("mnist", "fashion-mnist")

# The four files, in the order (train images, train labels, test images, test labels).
FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

# Accepted SHA-256 digests of each downloaded .gz file (any one of the tuple matches).
#
# MNIST: the published digests, as listed in tensorflow-datasets' url_checksums/mnist.txt for
# the cvdf-datasets mirror (the same files as LeCun's originals, also served by ossci-datasets).
# The extra train-images digest (0b3670...) is of the recompressed copy in the project's shared
# data folder (shared/data/mnist/): its gzip stream differs but it decompresses to exactly the
# standard IDX bytes (SHA-256 of the uncompressed file ba891046...25776db), so a file:// mirror
# pointing there is accepted too.
#
# Fashion-MNIST: tensorflow-datasets' url_checksums/fashion_mnist.txt for
# http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ (the files whose MD5s are listed in
# zalandoresearch/fashion-mnist's README; the same files are in that repository's data/fashion/).
SHA256: dict[str, dict[str, tuple[str, ...]]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": (
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
        ),
        "train-labels-idx1-ubyte.gz": (
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        ),
        "t10k-images-idx3-ubyte.gz": (
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        ),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": (
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        ),
        "train-labels-idx1-ubyte.gz": (
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        ),
        "t10k-images-idx3-ubyte.gz": (
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        ),
    },
}

# The largest accepted size of each downloaded .gz file, in bytes (the published files; MNIST's
# train images also the shared folder's smaller recompressed copy). A mirror sending more is cut
# off as soon as it does.
SIZES: dict[str, dict[str, int]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": 9_912_422,
        "train-labels-idx1-ubyte.gz": 28_881,
        "t10k-images-idx3-ubyte.gz": 1_648_877,
        "t10k-labels-idx1-ubyte.gz": 4_542,
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": 26_421_880,
        "train-labels-idx1-ubyte.gz": 29_515,
        "t10k-images-idx3-ubyte.gz": 4_422_102,
        "t10k-labels-idx1-ubyte.gz": 5_148,
    },
}

# The images of both datasets: uint8, 28 x 28 pixels.
IMAGE_SHAPE = (28, 28)

# The number of images in the published (training, test) sets: a file declaring more is refused
# from its header, before any of its data is read (smaller sets, such as synthetic ones, are fine).
SPLIT_SIZES: dict[str, tuple[int, int]] = {
    "mnist": (60_000, 10_000),
    "fashion-mnist": (60_000, 10_000),
}

# The names of the classes, by label.
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "mnist": tuple(str(digit) for digit in range(10)),
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"),
}

# Base URLs tried in order; a file's URL is the base URL followed by its name.
MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
}

# Environment variables that replace MIRRORS[dataset]: one or more base URLs separated by
# commas or whitespace (http://, https:// or file://).
MIRROR_ENV = {"mnist": "FNNET_MNIST_MIRROR", "fashion-mnist": "FNNET_FASHION_MNIST_MIRROR"}

Folder = str | os.PathLike | None


def check_name(name: str) -> None:
    """``ValueError`` unless ``name`` is one of ``DATASETS``."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}")


def _cache_source() -> tuple[str, Path]:
    """``(where the cache root comes from, the root)``."""
    if os.environ.get("FNNET_CACHE_DIR"):
        return "$FNNET_CACHE_DIR", Path(os.environ["FNNET_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return "$XDG_CACHE_HOME/fnnet", Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "fnnet"
    return "~/.cache/fnnet", Path.home() / ".cache" / "fnnet"


def cache_dir() -> Path:
    """The per-user cache root: ``$FNNET_CACHE_DIR``, else ``$XDG_CACHE_HOME/fnnet``, else
    ``~/.cache/fnnet``. Each dataset lives in a sub-folder named after it (``mnist/``)."""
    return _cache_source()[1]


def search_dirs(name: str, data_dir: Folder = None) -> list[tuple[str, Path]]:
    """The folders searched for dataset ``name``, in order, as ``(label, folder)`` pairs.

    ``data_dir`` alone when given (a folder the caller names is the only place looked at);
    else ``$FNNET_DATA_DIR/<name>`` (when the variable is set), then ``<cache_dir()>/<name>``.
    The label says where each folder came from.
    """
    check_name(name)
    if data_dir is not None:
        return [("data_dir argument", Path(data_dir).expanduser())]
    dirs = []
    if os.environ.get("FNNET_DATA_DIR"):
        root = Path(os.environ["FNNET_DATA_DIR"]).expanduser()
        dirs.append((f"$FNNET_DATA_DIR/{name}", root / name))
    source, root = _cache_source()
    dirs.append((f"cache ({source})", root / name))
    return dirs


def file_in(folder: Path, filename: str) -> Path | None:
    """``folder/filename``, or the same name without ``.gz``, whichever exists first."""
    for candidate in (folder / filename, folder / filename.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def find_complete(name: str, data_dir: Folder) -> list[Path] | None:
    """The four files of ``name`` (in ``FILES`` order) from the first folder holding them all."""
    for _label, folder in search_dirs(name, data_dir):
        paths = [file_in(folder, f) for f in FILES]
        if all(p is not None for p in paths):
            return paths  # type: ignore[return-value]
    return None


def mirrors_for(name: str, mirrors: Sequence[str] | str | None) -> list[str]:
    """The base URLs to try, each ending in ``/``: ``mirrors`` (a list, or one string of URLs
    separated by commas or white space), else ``$FNNET_..._MIRROR``, else ``MIRRORS[name]``."""
    if mirrors is None:
        env = os.environ.get(MIRROR_ENV[name], "").strip()
        mirrors = env if env else MIRRORS[name]
    if isinstance(mirrors, str):
        mirrors = mirrors.replace(",", " ").split()
    return [m if m.endswith("/") else m + "/" for m in mirrors]


# How a message names the settings: the library's arguments or the command line's flags.
WORDS = {
    "library": {"data_dir": "data_dir", "not_given": "data_dir argument: not given",
                "no_download": "download=False",
                "use_dir": 'pass data_dir="/folder/with/the/four/files" to load_{function}()'},
    "cli": {"data_dir": "--data-dir", "not_given": "--data-dir: not given",
            "no_download": "--no-download",
            "use_dir": "pass --data-dir /folder/with/the/four/files (or a root holding {name}/)"},
}


def _state(folder: Path) -> str:
    """``"(folder does not exist)"`` or ``"(missing FILE, ...)"``."""
    if not folder.is_dir():
        return "(folder does not exist)"
    return f"(missing {', '.join(f for f in FILES if file_in(folder, f) is None)})"


def _searched_lines(name: str, not_given: str) -> list[str]:
    """One line per location searched (given or not), saying what it lacks."""
    lines = [not_given] + [f"{label}: {folder} {_state(folder)}"
                           for label, folder in search_dirs(name)]
    if not os.environ.get("FNNET_DATA_DIR"):
        lines.insert(1, "$FNNET_DATA_DIR: not set")
    root = os.environ.get("FNNET_DATA_DIR")
    if root and any(file_in(Path(root).expanduser(), f) for f in FILES):
        lines.append(
            f"note: $FNNET_DATA_DIR={root} itself holds dataset files, but FNNET_DATA_DIR is a "
            f"root with one folder per dataset; move them into {Path(root) / name}/"
        )
    return lines


def _given_message(name: str, folder: Path, given_as: str, remedy: str) -> str:
    """Why a folder the caller named does not do, and what to do instead."""
    return (f"{name} not found in {given_as} {folder} {_state(folder)}: {given_as} is the only "
            f"place looked at (no $FNNET_DATA_DIR, cache or download). Expected the four files "
            f"{', '.join(FILES)} there: {remedy}.")


def not_found_message(name: str, data_dir: Folder, download: bool, mirrors: list[str],
                      failures: list[str], *, words: str = "library",
                      given_as: str | None = None, remedy: str | None = None) -> str:
    """What ``DatasetNotFoundError`` says: the folder named, or every folder searched, why
    downloading did not help, and how to point fnnet at files already at hand.

    ``words``: ``"library"`` (arguments, a list over several lines) or ``"cli"`` (flags, one
    line). For an explicit ``data_dir``: ``given_as`` names where it came from (default: as
    ``words`` do), ``remedy`` says what to do (default: name another folder, or none).
    """
    vocabulary = WORDS[words]
    if data_dir is not None:
        remedy = remedy or (f"name the folder that holds them, or leave out "
                            f"{vocabulary['data_dir']} to search $FNNET_DATA_DIR/{name} and the "
                            f"cache (and download)")
        return _given_message(name, Path(data_dir).expanduser(),
                              given_as or vocabulary["data_dir"], remedy)
    cache = cache_dir() / name
    blocks = [(f"{name} not found: no searched location holds all four files "
               f"{', '.join(FILES)}. Searched, in order:",
               _searched_lines(name, vocabulary["not_given"]))]
    if not download:
        blocks.append((f"Downloading is disabled ({vocabulary['no_download']}).", []))
    elif failures:
        blocks.append((f"Downloading into {cache} failed from every mirror:", failures))
    use_dir = vocabulary["use_dir"].format(name=name, function=name.replace("-", "_"))
    blocks.append(("To use files you already have, any one of:", [
        use_dir,
        f"set FNNET_DATA_DIR=/some/root with the files in /some/root/{name}/ (FNNET_DATA_DIR is "
        "a root holding one folder per dataset: mnist/, fashion-mnist/)",
        f"copy them into {cache}/",
    ]))
    blocks.append((f"Or point the downloader at another mirror with ${MIRROR_ENV[name]}=<base "
                   f"URL> (tried: {', '.join(mirrors) or 'none'}).", []))
    if words == "cli":
        return " ".join(f"{head} {'; '.join(items)}".strip() + ("." if items else "")
                        for head, items in blocks)
    return "\n".join(line for head, items in blocks
                     for line in [head, *(f"  - {item}" for item in items)])
