"""``fnnet.datasets.load_shakespeare``: the real corpus (through ``FNNET_DATA_DIR``), and on a small
stand-in text the lookup order, the download from a local HTTP server (atomic, size- and
hash-checked), refusals of files that are not the published one, and ``encode``/``decode``.

The real file is ``$FNNET_DATA_DIR/tinyshakespeare/input.txt`` or, when that variable is unset or
the file is not there, the shared data folder beside the repository; when it is in neither place
the real-data tests fail under CI (``$CI`` set), saying where they looked, and skip elsewhere.
Every other test runs with ``FNNET_DATA_DIR`` unset, the cache in ``tmp_path`` and the default
mirror at a closed local port: nothing here reaches the internet or the real cache.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np
import pytest
from test_datasets import DEAD_MIRROR, _listing
from test_mnist import data_root

from fnnet import datasets
from fnnet.datasets import ChecksumError, DatasetNotFoundError, load_shakespeare
from fnnet.datasets import shakespeare as S

# a stand-in corpus: a few lines, 90/10 split at 90% of its length
FAKE = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
        "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to "
        "famish?\n")


def shakespeare_root():
    """The data root holding ``tinyshakespeare/input.txt``; fails under CI, else skips, when
    there is none."""
    return data_root(lambda root: (root / S.FOLDER / S.FILENAME).is_file(),
                     f"{S.FOLDER}/{S.FILENAME}", "the tiny Shakespeare file")


@functools.cache
def _real(root):
    return load_shakespeare(download=False)


@pytest.fixture
def real_corpus(monkeypatch, tmp_path):
    root = shakespeare_root()
    monkeypatch.setenv("FNNET_DATA_DIR", str(root))
    monkeypatch.setenv("FNNET_CACHE_DIR", str(tmp_path / "cache"))  # never the user's cache
    return _real(root)


def test_the_real_corpus(real_corpus):
    c = real_corpus
    assert isinstance(c, datasets.CharCorpus)
    assert len(c.text) == 1_115_394 == S.SIZE
    assert c.text.startswith("First Citizen:\nBefore we proceed any further, hear me speak.")
    assert len(c.vocab) == c.vocab_size == 65 and list(c.vocab) == sorted(set(c.text))
    assert "".join(c.vocab[:13]) == "\n !$&',-.3:;?"
    # nanoGPT's shakespeare_char split: 1,003,854 training and 111,540 validation tokens
    assert c.train.dtype == c.validation.dtype == np.int32
    assert c.train.shape == (1_003_854,) and c.validation.shape == (111_540,)
    assert c.train.min() >= 0 and max(c.train.max(), c.validation.max()) == 64
    assert c.decode(c.train) + c.decode(c.validation) == c.text
    np.testing.assert_array_equal(c.encode(c.text[:1000]), c.train[:1000])
    assert [c.vocab[i] for i in c.encode("First")] == list("First")
    with pytest.raises(ValueError, match=r"encode: 2 character\(s\) not in the vocabulary of 65: "
                                         r"'_', 'é'"):
        c.encode("the_café")
    raw = (shakespeare_root() / S.FOLDER / S.FILENAME).read_bytes()
    assert hashlib.sha256(raw).hexdigest() == S.SHA256


def test_the_real_corpus_through_data_dir(monkeypatch, tmp_path):
    root = shakespeare_root()
    monkeypatch.delenv("FNNET_DATA_DIR", raising=False)
    monkeypatch.setenv("FNNET_CACHE_DIR", str(tmp_path / "cache"))
    c = load_shakespeare(root, download=False)
    assert len(c.train) + len(c.validation) == S.SIZE
    assert not (tmp_path / "cache").exists()


# ---------------------------------------------------------------------------------------------
# A stand-in text: lookup, download, refusals


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """No FNNET_DATA_DIR, a private cache, the default mirror refusing connections, and the
    stand-in text as the published file (its size and SHA-256); returns its bytes."""
    monkeypatch.delenv("FNNET_DATA_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv(S.MIRROR_ENV, raising=False)
    monkeypatch.setenv("FNNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(S, "MIRRORS", (DEAD_MIRROR,))
    data = FAKE.encode()
    monkeypatch.setattr(S, "SIZE", len(data))
    monkeypatch.setattr(S, "SHA256", hashlib.sha256(data).hexdigest())
    return data


def _put(root: Path, data: bytes, folder=S.FOLDER) -> Path:
    path = root / folder / S.FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _check_fake(c):
    assert c.text == FAKE and list(c.vocab) == sorted(set(FAKE))
    split = int(len(FAKE) * 0.9)
    assert c.train.dtype == np.int32 and c.train.shape == (split,)
    assert c.validation.shape == (len(FAKE) - split,)
    assert c.decode(c.train) == FAKE[:split] and c.decode(c.validation) == FAKE[split:]


def test_lookup_order_data_dir_then_env_then_cache(fake, tmp_path, monkeypatch):
    other = fake.replace(b"speak", b"Speak")
    _put(tmp_path / "cache", fake, S.CACHE_FOLDER)
    _check_fake(load_shakespeare(download=False))  # the cache, under shakespeare/
    env_root = tmp_path / "env"
    _put(env_root, fake)
    monkeypatch.setenv("FNNET_DATA_DIR", str(env_root))
    _check_fake(load_shakespeare(download=False))
    # $FNNET_DATA_DIR comes first: a wrong file there is refused, not skipped for the cache
    _put(env_root, other)
    with pytest.raises(ChecksumError, match="SHA-256"):
        load_shakespeare(download=False)
    # data_dir is the only place looked at: a root holding tinyshakespeare/, or the folder itself
    given = tmp_path / "given"
    _put(given, fake)
    _check_fake(load_shakespeare(given))
    (given / S.FOLDER / S.FILENAME).rename(given / S.FILENAME)
    _check_fake(load_shakespeare(given))


def test_data_dir_without_the_file_is_not_searched_further(fake, tmp_path, monkeypatch):
    _put(tmp_path / "cache", fake, S.CACHE_FOLDER)
    _put(tmp_path / "env", fake)
    monkeypatch.setenv("FNNET_DATA_DIR", str(tmp_path / "env"))
    empty = tmp_path / "empty"
    with pytest.raises(DatasetNotFoundError) as excinfo:
        load_shakespeare(empty)
    message = str(excinfo.value)
    assert isinstance(excinfo.value, FileNotFoundError)
    assert str(empty / S.FOLDER / S.FILENAME) in message and "only place looked at" in message
    assert excinfo.value.message("cli") == message


def test_not_found_and_no_download_says_where_it_looked(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("FNNET_DATA_DIR", str(tmp_path / "env"))
    with pytest.raises(datasets.ShakespeareNotFoundError) as excinfo:
        load_shakespeare(download=False)
    message = str(excinfo.value)
    assert str(tmp_path / "env" / S.FOLDER / S.FILENAME) in message
    assert str(tmp_path / "cache" / S.CACHE_FOLDER / S.FILENAME) in message
    assert "download=False" in message and S.MIRROR_ENV in message
    with pytest.raises(datasets.ShakespeareNotFoundError) as excinfo:
        load_shakespeare()  # the default mirror: a closed local port
    assert DEAD_MIRROR + S.FILENAME in str(excinfo.value)
    assert _listing(tmp_path / "cache") == [] and not (tmp_path / "cache" / S.CACHE_FOLDER).exists()


def test_download_lands_in_the_cache_once(fake, mirror, tmp_path, monkeypatch, capsys):
    url, www = mirror
    (www / S.FILENAME).write_bytes(fake)
    monkeypatch.setenv(S.MIRROR_ENV, url)
    _check_fake(load_shakespeare())
    assert _listing(tmp_path / "cache") == [f"{S.CACHE_FOLDER}/{S.FILENAME}"]
    assert "downloading" in capsys.readouterr().err
    (www / S.FILENAME).unlink()  # a second load uses the cache: the server is not asked
    _check_fake(load_shakespeare())
    assert "downloading" not in capsys.readouterr().err


def test_a_wrong_hash_is_refused_and_nothing_is_left(fake, mirror, tmp_path, monkeypatch):
    url, www = mirror
    wrong = fake.replace(b"speak", b"Speak")  # the same size, another SHA-256
    (www / S.FILENAME).write_bytes(wrong)
    with pytest.raises(ChecksumError) as excinfo:
        load_shakespeare(mirrors=[url])
    message = str(excinfo.value)
    assert S.SHA256 in message and hashlib.sha256(wrong).hexdigest() in message
    assert "Nothing was kept" in message
    assert _listing(tmp_path / "cache") == []  # no temporary file, no empty folder
    assert not (tmp_path / "cache" / S.CACHE_FOLDER).exists()


def test_a_larger_download_is_cut_off_and_the_next_mirror_used(fake, mirror, tmp_path, capsys):
    url, www = mirror
    (www / "big").mkdir()
    (www / "big" / S.FILENAME).write_bytes(fake * 3)
    (www / "good").mkdir()
    (www / "good" / S.FILENAME).write_bytes(fake)
    _check_fake(load_shakespeare(mirrors=f"{url}big/, {url}missing/ {url}good"))
    err = capsys.readouterr().err
    assert f"more than the {len(fake):,} bytes" in err and "404" in err
    assert _listing(tmp_path / "cache") == [f"{S.CACHE_FOLDER}/{S.FILENAME}"]


def test_a_file_of_another_size_is_refused_before_it_is_read(fake, tmp_path, monkeypatch):
    path = _put(tmp_path / "given", b"")
    with open(path, "wb") as f:  # far larger than the published file (sparse: nothing written)
        f.truncate(1 << 30)
    opened = []
    real_open = open
    with monkeypatch.context() as patch:
        patch.setattr("builtins.open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
        with pytest.raises(ChecksumError) as excinfo:
            load_shakespeare(tmp_path / "given")
    message = str(excinfo.value)
    assert f"{1 << 30:,} bytes" in message and f"{len(fake):,} bytes" in message
    assert S.SHA256 in message and str(path) in message
    assert not opened, "the file was opened although its size was wrong"


def test_a_corrupt_cached_file_is_refused_with_what_was_expected(fake, tmp_path):
    _put(tmp_path / "cache", fake.replace(b"A", b"B"), S.CACHE_FOLDER)
    with pytest.raises(ChecksumError, match="expected the published input.txt of "
                                            f"{len(fake)} bytes with SHA-256 {S.SHA256}.*"
                                            "downloaded again"):
        load_shakespeare()


def test_encode_and_decode(fake, tmp_path):
    c = load_shakespeare(_put(tmp_path / "given", fake).parent)
    ids = c.encode("Speak, speak.")
    assert ids.dtype == np.int32 and c.decode(ids) == "Speak, speak."
    assert c.decode(ids.reshape(1, -1)) == "Speak, speak." and c.decode([]) == ""
    assert c.encode("").shape == (0,)
    with pytest.raises(ValueError, match=r"encode: 3 character\(s\) not in the vocabulary of "
                                         rf"{len(c.vocab)}: 'Q', 'Z', 'é'"):
        c.encode("Qué Z")
    with pytest.raises(ValueError, match=r"decode: token id -1 at position 1 is outside"):
        c.decode([0, -1, 2])
    with pytest.raises(ValueError, match=rf"decode: token id {len(c.vocab)} at position 0"):
        c.decode([len(c.vocab)])
    with pytest.raises(TypeError, match="integers"):
        c.decode(np.array([0.5]))
    with pytest.raises(TypeError, match="expected a str"):
        c.encode(b"bytes")
