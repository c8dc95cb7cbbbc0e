"""Test-wide settings: float64 available (gradient checks run in it), hypothesis without deadlines
(first calls compile), a fixed profile so CI is reproducible, the quick tier's one example per
property test, and Ctrl-C as a terminal delivers it."""

import collections
import functools
import http.server
import os
import shutil
import signal
import sys
import tempfile
import threading
import types

import jax
import pytest
from hypothesis import settings

jax.config.update("jax_enable_x64", True)

# The suite's programs are compiled with LLVM's optimisations off and XLA:CPU's older loop
# emitters in place of its MLIR fusion emitters. XLA's HLO passes (its fusions, layouts and
# algebraic rewrites) and the matrix-product libraries are unchanged: the same HLO programs,
# compiled faster, their element-wise loops run slower, and float results can differ from a
# default build in the last bits (each test compares programs built alike). Most tests run a
# program once or twice, so compiling dominates: on a 2-core AMD Zen 3, test_gpt.py took 90 s
# without the flags, 61 s with the first two and 37 s with all three. A long run is another
# matter (an epoch of the CNN on real MNIST, 30 s -> 91 s): test_mnist.py trains it in a process
# started without them. The programs the tests start inherit the flags; a test that sets
# XLA_FLAGS for a program it starts adds to these (``xla_flags_with``).
SUITE_XLA_FLAGS = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true",
                   "--xla_cpu_use_fusion_emitters=false")


def xla_flags_with(*flags):
    """``XLA_FLAGS`` as this process has it (the suite's flags included), and ``flags``."""
    return " ".join([os.environ.get("XLA_FLAGS", ""), *flags]).strip()


os.environ["XLA_FLAGS"] = xla_flags_with(*SUITE_XLA_FLAGS)

# One persistent compilation cache for the test processes, shared by the xdist workers: a program
# compiled by one test (the same network trained twice to compare the runs, a model checkpointed
# and resumed) is loaded, not compiled again, by the next test that builds it. It holds what XLA
# built, so results are the same bit for bit; programs that compile in under 0.3 s are not kept.
# The controlling process creates the folder (the workers inherit its environment) and removes
# it at the end. The programs the tests start run as a user's would, without it; tests of
# the command line's own cache set it aside (tests/test_compile_cache.py).
SUITE_CACHE = "FNNET_TEST_COMPILE_CACHE"
CREATED_HERE = pytest.StashKey[str]()  # the folder, in the process that created it


def pytest_configure(config):
    if not os.environ.get(SUITE_CACHE):
        os.environ[SUITE_CACHE] = tempfile.mkdtemp(prefix="fnnet-tests-compile-cache-")
        config.stash[CREATED_HERE] = os.environ[SUITE_CACHE]
    jax.config.update("jax_compilation_cache_dir", os.environ[SUITE_CACHE])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.3)


def pytest_unconfigure(config):
    folder = config.stash.get(CREATED_HERE, None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop(SUITE_CACHE, None)


settings.register_profile("ci", deadline=None, max_examples=25, derandomize=True, print_blob=True)
settings.register_profile("dev", deadline=None, max_examples=25)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

# The Ctrl-C tests send SIGINT to the programs they start, which inherit this process's
# disposition of it. A shell without job control starts a background command (`pytest &` in a
# script) with SIGINT ignored, and its children would then ignore the Ctrl-C under test and run
# to the end. Python's own handler is put back, so the suite means the same however it is started.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# The files that take longest (about 1.5–3.5 minutes each on the 2-core box), longest first. The
# workers take whole files in this order as they come free (pyproject.toml's addopts turn off
# xdist's own reordering, by test count), so these go first: a long file started last would leave
# the other workers idle at the end. The other files follow, those with more tests first.
LONGEST_FILES = ("test_gradients.py", "test_readme.py", "test_benchmark.py", "test_training.py",
                 "test_precision.py", "test_launch.py", "test_gpt.py", "test_normalization.py")


def pytest_collection_modifyitems(config, items):
    """The longest files first (``LONGEST_FILES``), then the others by their number of tests,
    each file's tests in their own order.

    The quick tier (``-m "not slow"``, for development) also runs each property test on one
    example instead of its dozen: every rule still runs once, at a fraction of the compile time.
    The whole suite (no ``-m``, what CI runs) runs every example."""
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    count = collections.Counter(item.path.name for item in items)
    # stable: each file's tests keep their order
    items.sort(key=lambda item: (rank.get(item.path.name, len(rank)), -count[item.path.name],
                                 item.path.name))
    if "not slow" not in (config.getoption("markexpr") or ""):
        return
    for item in items:
        test = getattr(item, "obj", None)
        chosen = getattr(test, "_hypothesis_internal_use_settings", None)
        if chosen is not None:
            test._hypothesis_internal_use_settings = settings(chosen, max_examples=1)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path):
    """A local HTTP server over ``tmp_path / "www"``; yields ``(base_url, folder)``."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(autouse=True)
def _stand_in_data_is_not_announced(request, monkeypatch):
    """The stand-in MNIST files the tests write match neither data set's published digests, so
    the loader would warn on every load (``fnnet.datasets.loaders.check_identity``); that warning
    is checked where it is tested (``@pytest.mark.digest_warnings``) and silenced elsewhere.
    Files that are the other data set's are still refused everywhere."""
    if request.node.get_closest_marker("digest_warnings"):
        return
    import warnings

    from fnnet.datasets import loaders

    check = loaders.check_identity

    def quiet(name, paths):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*match neither data set's published",
                                    category=UserWarning)
            check(name, paths)

    monkeypatch.setattr(loaders, "check_identity", quiet)


class Stop(Exception):
    """Raised by a stand-in ``fit`` once it has seen its arguments."""


@pytest.fixture
def fit_calls(monkeypatch):
    """Replace ``fit`` in the train command by one that records its keyword arguments and stops."""
    from fnnet import cli

    calls = []

    def fake_fit(**kwargs):
        calls.append(kwargs)
        raise Stop

    monkeypatch.setattr(cli.train, "fit", fake_fit)
    return calls


@pytest.fixture
def bench_calls(monkeypatch):
    """Replace the benchmark ``fnnet bench`` runs by one that records its arguments."""
    calls = []
    fake = types.ModuleType("fnnet.bench")
    fake.main = lambda argv=None: calls.append(argv) or 0
    monkeypatch.setitem(sys.modules, "fnnet.bench", fake)
    return calls
