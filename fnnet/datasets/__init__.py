"""MNIST and Fashion-MNIST: IDX files, where to find them, how to download them, and helpers;
and the tiny Shakespeare text corpus, found and downloaded the same way.

Everything here is plain numpy plus the standard library; nothing imports jax. One module a
concern, every public name re-exported here:

``idx``
    ``read_idx(path)`` reads any IDX file, gzipped or raw (decided by the gzip magic bytes
    ``1f 8b``, never by the file name); ``write_idx(path, array)`` writes one atomically.
``sources``
    The datasets' files (``FILES``), published checksums and sizes (``SHA256``, ``SIZES``),
    class names (``CLASS_NAMES``), mirrors (``MIRRORS``, ``MIRROR_ENV``) and the folders searched
    for them (``search_dirs``, ``cache_dir``).
``download``
    Downloading the missing files into ``<cache>/<dataset>/``, each checked against ``SHA256``
    before it is kept (``ChecksumError`` otherwise), within a deadline and a size cap.
``loaders``
    ``load_mnist()`` and ``load_fashion_mnist()`` return ``(x_train, y_train), (x_test, y_test)``
    with uint8 images of shape ``(N, 28, 28)`` and int64 labels in ``0..9``: from ``data_dir``
    alone when it is given, else from the first location that holds all four files
    (``$FNNET_DATA_DIR/<dataset>/``, the cache), downloading them when none does and
    ``download=True``.
``preprocess``
    ``flatten``, ``scale``, ``one_hot`` and ``prepare`` turn the arrays into model inputs;
    ``hold_out`` splits a validation set off the training set.
``synthetic``
    ``synthetic_mnist`` makes small learnable stand-in data and ``write_mnist_files`` writes it
    (or any arrays) as the four IDX files, for tests and smoke runs without the real data.
``shakespeare``
    ``load_shakespeare()`` returns the tiny Shakespeare corpus (char-rnn's, nanoGPT's) as a
    ``CharCorpus``: the text, its 65-character sorted vocabulary, int32 token ids split 90/10
    into ``train`` and ``validation``, and ``encode``/``decode``; from
    ``data_dir/tinyshakespeare/`` alone when given, else ``$FNNET_DATA_DIR/tinyshakespeare/`` or
    the cache's ``shakespeare/``, downloading it once (size and SHA-256 checked) when none holds
    it and ``download=True``.
"""

from fnnet.datasets.download import ChecksumError
from fnnet.datasets.idx import IDX_DTYPES, IDXError, read_idx, read_idx_header, write_idx
from fnnet.datasets.loaders import DatasetError, load_dataset, load_fashion_mnist, load_mnist
from fnnet.datasets.preprocess import (
    ALIGNMENT,
    aligned_empty,
    flatten,
    hold_out,
    one_hot,
    prepare,
    scale,
)
from fnnet.datasets.shakespeare import CharCorpus, ShakespeareNotFoundError, load_shakespeare
from fnnet.datasets.sources import (
    CLASS_NAMES,
    DATASETS,
    FILES,
    IMAGE_SHAPE,
    MIRROR_ENV,
    MIRRORS,
    SHA256,
    SIZES,
    SPLIT_SIZES,
    DatasetNotFoundError,
    cache_dir,
    search_dirs,
)
from fnnet.datasets.synthetic import synthetic_mnist, write_mnist_files

__all__ = [
    "ALIGNMENT",
    "CLASS_NAMES",
    "CharCorpus",
    "DATASETS",
    "FILES",
    "IDX_DTYPES",
    "IMAGE_SHAPE",
    "MIRRORS",
    "MIRROR_ENV",
    "SHA256",
    "SIZES",
    "SPLIT_SIZES",
    "ChecksumError",
    "DatasetError",
    "DatasetNotFoundError",
    "IDXError",
    "ShakespeareNotFoundError",
    "aligned_empty",
    "cache_dir",
    "flatten",
    "hold_out",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "load_shakespeare",
    "one_hot",
    "prepare",
    "read_idx",
    "read_idx_header",
    "scale",
    "search_dirs",
    "synthetic_mnist",
    "write_idx",
    "write_mnist_files",
]
