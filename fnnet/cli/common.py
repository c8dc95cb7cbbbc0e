"""What the commands share: the parser that raises instead of exiting, the two errors ``main``
reports, flag-value types, the network and data flags (``--model mlp|cnn`` and the flags only the
MLP takes), the output-folder checks (a folder that can be written, output names that are not
folders, a folder that holds a run, the lock a run holds on its folder), data loading, the
results lines, and the persistent compilation cache of the commands that compile
(``--compile-cache DIR``, ``--no-compile-cache``)."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import platform
import shlex
import stat
import sys
import tempfile
import warnings
from pathlib import Path

try:
    import fcntl
except ImportError:  # not a POSIX system: runs take no lock on their folder
    fcntl = None

from .. import checks, datasets
from ..devices import distributed
from .model_config import (
    CNN_ARCHITECTURE,
    FIXED,
    HIDDEN_ACTIVATIONS,
    LOSSES,
    LSTM_ARCHITECTURE,
    MODELS,
    OUTPUTS,
    MetadataError,
    check_loss_output,
)

MAX_SEED = 2**31 - 1  # every PRNG here accepts seeds 0 .. 2**31 - 1
FORMATTER = argparse.RawDescriptionHelpFormatter


class UsageError(Exception):
    """A bad command line or flag value: one line on stderr, exit status 2."""

    def __init__(self, prog, message):
        super().__init__(message)
        self.prog = prog


class DataUnavailable(Exception):
    """The dataset could not be found, downloaded or read: its message on stderr, exit status 1."""

    def __init__(self, prog, message):
        super().__init__(message)
        self.prog = prog


def exit_code(code):
    """What ``sys.exit(code)`` would exit with: ``None`` is 0, an int itself, anything else 1
    (after printing it on stderr)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose ``error`` raises ``UsageError`` instead of printing the
    usage block and exiting, so that ``main`` reports one line and returns 2."""

    def error(self, message):
        raise UsageError(self.prog, message)


# ---------------------------------------------------------------------------------------------
# Flag values: each parses the text, then applies the rule of fnnet.checks


def _convert(text, parse, check, expected):
    """``check(parse(text))``; ``argparse.ArgumentTypeError`` "expected ..., got TEXT" if either
    refuses the value (argparse puts "argument --FLAG:" before it)."""
    try:
        return check(parse(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def _positive(value):
    return checks.integer("fnnet", "value", value)


def _seed_value(value):
    value = checks.integer("fnnet", "seed", value, minimum=0)
    if value > MAX_SEED:
        raise ValueError(f"fnnet: seed must be at most {MAX_SEED}, got {value}")
    return value


def positive_int(text):
    """A positive integer."""
    return _convert(text, int, _positive, "a positive integer")


def count(text):
    """An integer ``>= 0``."""
    return _convert(text, int, lambda value: checks.integer("fnnet", "value", value, minimum=0),
                    "an integer >= 0")


def seed(text):
    """A random seed: an integer in ``0 .. 2**31 − 1``."""
    return _convert(text, int, _seed_value, f"an integer seed in 0..{MAX_SEED}")


def positive_float(text):
    """A finite number ``> 0``."""
    return _convert(text, float, lambda value: checks.real("fnnet", "value", value, low=0,
                                                           low_open=True), "a finite number > 0")


def non_negative_float(text):
    """A finite number ``>= 0``."""
    return _convert(text, float, lambda value: checks.real("fnnet", "value", value, low=0),
                    "a finite number >= 0")


def dropout_rate(text):
    """A probability in ``[0, 1)``."""
    return _convert(text, float, lambda value: checks.real("fnnet", "value", value, low=0, high=1,
                                                           high_open=True), "a number in [0, 1)")


def decay_rate(text):
    """A factor in ``(0, 1]``."""
    return _convert(text, float, lambda value: checks.real("fnnet", "value", value, low=0, high=1,
                                                           low_open=True), "a number in (0, 1]")


def batch_size(text):
    """A positive integer, or ``full`` (``None``) for full-batch gradient descent."""
    if text == "full":
        return None
    return _convert(text, int, _positive, "a positive integer or 'full'")


def folder(text):
    """A folder path: any text but the empty one (which would otherwise mean the current
    folder)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a folder, got an empty value ''")
    return Path(text)


def layers(text):
    """``"784,128,10"`` -> ``[784, 128, 10]``: at least two positive integers."""
    sizes = _convert(text, lambda parts: [int(part) for part in parts.split(",")],
                     lambda sizes: [_positive(size) for size in sizes],
                     "comma-separated positive integers like 784,128,10")
    if len(sizes) < 2:
        raise argparse.ArgumentTypeError(
            f"expected at least an input and an output size like 784,128,10, got {text!r} (the "
            f"number of a GPT's blocks or of an LSTM's layers is --depth)")
    return sizes


# ---------------------------------------------------------------------------------------------
# Flags shared by commands


MLP_ONLY = ("layers", "activation", "output")  # flags --model cnn and lstm refuse when given
_ARCH = CNN_ARCHITECTURE
CNN_SUMMARY = (f"fnnet.cnn(): {len(_ARCH['channels'])} stages of {_ARCH['kernel_size']}x"
               f"{_ARCH['kernel_size']} convolution, ReLU and {_ARCH['pool']}x{_ARCH['pool']} max "
               f"pooling ({' and '.join(map(str, _ARCH['channels']))} channels), dropout "
               f"{_ARCH['dropout']:g}, dense {_ARCH['hidden']}, ReLU, dense 10, softmax")
LSTM_SUMMARY = (f"fnnet.sequence_classifier(28, 10): LSTM(28, {LSTM_ARCHITECTURE['hidden']}) "
                f"over each image's 28 rows, the last step, dense 10, softmax")
SUMMARIES = {"cnn": ("CNN", CNN_SUMMARY), "lstm": ("LSTM", LSTM_SUMMARY)}


def add_network_flags(parser, default_layers, models=MODELS):
    """``--model``, ``--layers`` (default ``default_layers``), ``--activation``, ``--output``,
    ``--loss``. The three MLP flags parse to ``None`` when not given, so that ``--model cnn``
    can tell them apart from their defaults; ``resolve_network`` fills them in."""
    gpt = ("; gpt, a GPT on characters (--dataset shakespeare only, fnnet.gpt: nanoGPT's "
           "CPU recipe)") if "gpt" in models else ""
    parser.add_argument("--model", choices=models, default="mlp",
                        help=f"the network: mlp, a multilayer perceptron on flat images (--layers, "
                             f"--activation, --output); cnn, {CNN_SUMMARY}, on 28x28x1 images; "
                             f"lstm, {LSTM_SUMMARY} (with --dataset shakespeare a character "
                             f"LSTM){gpt} (default: mlp)")
    parser.add_argument("--layers", type=layers, metavar="N,N,...",
                        help=f"MLP layer sizes, input first (default: {default_layers})")
    parser.add_argument("--activation", choices=HIDDEN_ACTIVATIONS,
                        help="MLP hidden-layer activation (default: relu)")
    parser.add_argument("--output", choices=OUTPUTS,
                        help="MLP output activation (default: softmax)")
    parser.add_argument("--loss", choices=LOSSES, default="cross-entropy",
                        help="loss (default: cross-entropy); cross-entropy needs --output softmax, "
                             "binary-cross-entropy --output sigmoid or softmax; --model cnn "
                             "and lstm train with cross-entropy only")


def resolve_network(args, default_layers):
    """Fill in the MLP flags' defaults (``default_layers``, relu, softmax); for ``--model cnn``
    or ``lstm`` refuse the MLP flags given and a loss other than cross-entropy, and set
    ``layers`` to ``None``, ``activation`` and ``output`` to the network's (``FIXED``).
    ``UsageError`` for a refusal, or a loss and output that do not go together."""
    if args.model in FIXED:
        name, summary = SUMMARIES[args.model]
        given = [f"--{flag}" for flag in MLP_ONLY if getattr(args, flag) is not None]
        if given:
            raise UsageError(args.prog, f"argument {', '.join(given)}: only for --model mlp; the "
                                        f"{name} is {summary}")
        if args.loss != "cross-entropy":
            raise UsageError(args.prog, f"argument --loss: --model {args.model} trains with "
                                        f"cross-entropy only (its output is a softmax), got "
                                        f"--loss {args.loss}")
        args.activation, args.output = FIXED[args.model]["activation"], FIXED[args.model]["output"]
        return
    if args.layers is None:
        args.layers = layers(default_layers)
    args.activation = args.activation or "relu"
    args.output = args.output or "softmax"
    check_flags_loss_output(args.prog, args.loss, args.output)


def add_data_flags(parser):
    """``--data-dir`` and ``--no-download``."""
    parser.add_argument("--data-dir", type=folder, metavar="DIR",
                        help="folder with the four .gz files, or a root holding mnist/ and "
                             "fashion-mnist/; when given, the only place looked at (default: "
                             "$FNNET_DATA_DIR, then the cache, then a download)")
    parser.add_argument("--no-download", action="store_true",
                        help="never download; fail when the files are not found")


def check_flags_loss_output(prog, loss, output):
    """``model_config.check_loss_output`` worded with the flags; ``UsageError`` if it refuses."""
    try:
        check_loss_output(loss, output, prefix="--")
    except MetadataError as e:
        raise UsageError(prog, str(e)) from None


def _accepts_folders(path):
    """``None`` if a folder can be created in the folder ``path``, else why not: a folder is
    made and removed at once (``os.access`` says yes to root under /proc and /sys, where nothing
    can be created)."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".fnnet-probe-", dir=path))
    except OSError as e:
        return f"{path} does not accept new folders ({e.strerror or e})"
    return None


def check_out(prog, out, flag="--out"):
    """Refuse, before any work, an output folder that is a file, lies under a file or cannot be
    written (``UsageError``). Nothing is left behind: the nearest folder that exists is checked
    (a folder made in it and removed at once). An empty value is refused too: ``Path("")`` would
    be the current folder."""
    if isinstance(out, str) and not out:
        raise UsageError(prog, f"argument {flag}: expected a folder, got an empty value ''")
    out = Path(out).expanduser()
    existing = next(p for p in (out, *out.parents) if p.exists() or p == p.parent)
    if existing == out and not out.is_dir():
        problem = "it is a file, not a folder"
    elif not existing.is_dir():
        problem = f"{existing} is a file, not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{existing} is not writable"
    else:
        problem = _accepts_folders(existing)
        if problem is None:
            return out
    raise UsageError(prog, f"argument {flag}: cannot write into {out}: {problem}; expected a "
                           f"folder that can be created or written")


def check_outputs(prog, out, names, flag="--out"):
    """Refuse (``UsageError``), before any work, an output name in ``out`` that a file cannot be
    written to: a folder, or anything else that is not a regular file (a link is replaced)."""
    for name in names:
        path = Path(out) / name
        if path.is_symlink() or not path.exists() or path.is_file():
            continue
        what = "a folder" if path.is_dir() else "not a regular file"
        raise UsageError(prog, f"argument {flag}: cannot write {path}: it is {what}; expected a "
                               f"file or nothing at that path (remove or rename it, or choose "
                               f"another {flag})")


# ---------------------------------------------------------------------------------------------
# The run in an output folder, and the lock a run holds on it

#: The files whose presence makes a folder hold a run of ``fnnet train``.
RUN_FILES = ("train_state.npz", "model.npz", "config.json")
#: The lock file a run holds (``fcntl.flock``) in its folder while it uses it.
LOCK_NAME = ".fnnet.lock"


def run_files(out):
    """The names of ``RUN_FILES`` present in ``out``."""
    return [name for name in RUN_FILES if os.path.lexists(Path(out) / name)]


def check_run_folder(prog, out, resume, overwrite):
    """Refuse (``UsageError``) ``--resume`` with ``--overwrite``, and a folder that holds a run
    (``RUN_FILES``) when neither is given: a new run never silently replaces an old one."""
    if resume and overwrite:
        raise UsageError(prog, "argument --overwrite: not allowed with --resume (--resume "
                               "continues the run in --out, --overwrite replaces it; pass one)")
    found = run_files(out)
    if found and not (resume or overwrite):
        raise UsageError(prog, f"argument --out: {out} already holds a run ({', '.join(found)}); "
                               f"pass --resume to continue it or --overwrite to replace it, or "
                               f"choose another --out")


def _holder(path):
    """``"pid 123: fnnet train ..."``: who holds the lock at ``path``, from what it wrote."""
    with contextlib.suppress(OSError):
        pid, _, command = path.read_text(errors="replace").partition("\n")
        if pid.strip().isdigit():
            command = " ".join(command.split())
            return f"pid {pid.strip()}" + (f": {command}" if command else "")
    return "its process did not say which"


def _in_use(prog, out, path):
    return UsageError(prog, f"argument --out: {out} is in use by another run ({_holder(path)}); "
                            f"wait for it to finish, or choose another --out")


def check_not_in_use(prog, out):
    """Refuse (``UsageError``, naming the holder) a folder whose lock another run holds. Takes
    no lock: a quick look before any work (``run_lock`` takes it)."""
    path = Path(out) / LOCK_NAME
    if fcntl is None or not path.is_file():
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _in_use(prog, out, path) from None
    except OSError:
        return  # no locks on this file system: run_lock says so when it takes its own
    finally:
        os.close(fd)


def _acquire(prog, out, command):
    """The descriptor of ``out``'s lock file, locked, with ``command`` written in it; ``None``
    when the file system takes no locks (with a warning)."""
    path = out / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UsageError(prog, f"argument --out: cannot create the lock file {path}: "
                                   f"{e.strerror or e}; expected a folder that can be "
                                   f"written") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _in_use(prog, out, path) from None
        except OSError as e:
            os.close(fd)
            print(f"{prog}: warning: cannot lock {out} ({e.strerror or e}); make sure no other "
                  f"run writes into it at the same time", file=sys.stderr, flush=True)
            return None
        try:  # the file locked is still the one at path (a finishing run removes its file)
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except OSError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n{command}\n".encode())
    return fd


@contextlib.contextmanager
def run_lock(prog, out, argv, enabled=True):
    """Hold a lock on the run folder ``out`` while the block runs: ``fcntl.flock`` on
    ``out/LOCK_NAME``, which records this process's id and command line (``fnnet`` and
    ``argv``). Another run into ``out`` is refused (``UsageError`` naming the holder). The lock
    goes with the process however it ends; the file is removed when the block ends (one left
    by a killed process blocks nothing). A folder created here that holds nothing at the end
    is removed. ``enabled=False`` (the processes of a distributed run other than process 0,
    which write nothing) takes no lock."""
    if not enabled or fcntl is None:
        yield
        return
    out = Path(out)
    created = [p for p in (out, *out.parents) if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(prog, f"argument --out: cannot create {out}: {e.strerror or e}; "
                               f"expected a folder that can be created or written") from None
    fd = None
    try:
        fd = _acquire(prog, out, shlex.join(["fnnet", *map(str, argv)]))
        yield
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                (out / LOCK_NAME).unlink()
            os.close(fd)
        for path in created:  # deepest first; stop at the first that holds something
            try:
                path.rmdir()
            except OSError:
                break


# ---------------------------------------------------------------------------------------------
# Data and output


def data_folder(name, data_dir):
    """The folder ``--data-dir DIR`` names for dataset ``name``: ``DIR/<name>`` when that is a
    folder, else ``DIR`` itself."""
    folder = Path(data_dir).expanduser()
    return folder / name if (folder / name).is_dir() else folder


def say_bf16_emulated(prog, precision):
    """One line when ``--precision bf16`` will run on a CPU without bfloat16 matrix units
    (AMX, AVX-512 BF16, Arm BF16): XLA then emulates the products, usually slower than float32
    (1.1–1.8× on an AMD Zen 3)."""
    if precision != "bf16":
        return
    import jax

    from ..bench.mixed import cpu_description  # the benchmark's modules only when they are needed

    if jax.default_backend() != "cpu":
        return
    cpu = cpu_description()
    if not cpu["bf16_units"]:
        print(f"{prog}: note: this CPU ({cpu['model']}) has no bfloat16 matrix units, so "
              f"--precision bf16 is emulated and usually slower than f32", file=sys.stderr,
              flush=True)


def _say_warnings(prog, caught):
    """The data loader's warnings (files that match neither data set's digests) as one line
    each, ``PROG: warning: ...``, from process 0 only; any other warning as Python shows it."""
    for w in caught:
        if issubclass(w.category, UserWarning) and not issubclass(w.category, DeprecationWarning):
            if distributed.is_main():
                print(f"{prog}: warning: {w.message}", file=sys.stderr, flush=True)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def load_data(prog, name, data_dir, download, given_as="--data-dir", remedy=None):
    """``(x_train, y_train), (x_test, y_test)`` of ``name`` as loaded (uint8 images, int64
    labels): from ``data_folder(name, data_dir)`` alone when ``data_dir`` is given, else from
    the default locations. ``DataUnavailable`` in the command line's words if they fail;
    ``given_as`` and ``remedy`` word the message about an explicit folder."""
    folder = None if data_dir is None else data_folder(name, data_dir)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            data = datasets.load_dataset(name, folder, download)
        _say_warnings(prog, caught)
        return data
    except datasets.DatasetNotFoundError as e:
        raise DataUnavailable(prog, e.message("cli", given_as, remedy)) from None
    except (OSError, datasets.IDXError, datasets.DatasetError, datasets.ChecksumError) as e:
        raise DataUnavailable(prog, " ".join(str(e).split())) from None


def print_results(results, num_models):
    """The test scores of ``scoring.summarize_test``: one line per model, their mean and the
    ensemble's for several models."""
    if num_models == 1:
        print(f"test accuracy {results['test_accuracy']:.2%}  (test loss {results['test_loss']:.4f})")
        return
    for index, (accuracy, loss) in enumerate(zip(results["model_test_accuracy"],
                                                 results["model_test_loss"])):
        print(f"model {index}: test accuracy {accuracy:.2%}  (test loss {loss:.4f})")
    print(f"mean of {num_models} models: test accuracy {results['mean_test_accuracy']:.2%}  "
          f"(test loss {results['mean_test_loss']:.4f})")
    print(f"ensemble of {num_models} (averaged probabilities): test accuracy "
          f"{results['test_accuracy']:.2%}  (test loss {results['test_loss']:.4f})")


# ---------------------------------------------------------------------------------------------
# The persistent compilation cache (the command line only: importing fnnet changes no setting)

#: The JAX settings ``compile_cache`` sets while a command runs: the folder, and every program
#: cached, however small or quick to compile (fnnet's MLP programs compile in well under JAX's
#: default threshold of 1 s).
CACHE_SETTINGS = {"jax_persistent_cache_min_compile_time_secs": 0.0,
                  "jax_persistent_cache_min_entry_size_bytes": -1}


def add_cache_flags(parser):
    """``--compile-cache DIR`` and ``--no-compile-cache``."""
    parser.add_argument("--compile-cache", type=folder, metavar="DIR",
                        help="keep compiled programs in DIR, so that the next identical run "
                             "starts without compiling (default: $JAX_COMPILATION_CACHE_DIR, else "
                             "the jax/ folder of fnnet's per-user cache, ~/.cache/fnnet/jax); it "
                             "must be yours and writable only by you")
    parser.add_argument("--no-compile-cache", action="store_true",
                        help="compile every program afresh and write no compile cache")


def default_cache_folder():
    """The compile cache folder when ``--compile-cache`` is not given:
    ``$JAX_COMPILATION_CACHE_DIR`` if set, else ``jax/`` in fnnet's per-user cache
    (``$FNNET_CACHE_DIR``, ``$XDG_CACHE_HOME/fnnet`` or ``~/.cache/fnnet``)."""
    import jax

    from ..datasets.sources import cache_dir

    configured = jax.config.jax_compilation_cache_dir
    return Path(configured).expanduser() if configured else cache_dir() / "jax"


def machine_key():
    """A short name for this machine's processor (architecture, model and feature flags):
    compiled CPU code is kept per processor, so that a cache folder shared between machines (an
    NFS home) never hands one CPU code built for another's instruction set."""
    text = platform.machine()
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        text += "".join(sorted({line for line in lines
                                if line.startswith(("model name", "flags", "Features"))}))
    return f"{platform.machine() or 'cpu'}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def unsafe_folder_reason(folder):
    """Why ``folder`` must not hold compiled code, or ``None`` when it is safe: it must be a
    folder owned by the user running fnnet and writable by nobody else (group/other bits)."""
    info = folder.stat()
    if not stat.S_ISDIR(info.st_mode):
        return f"{folder} is not a folder"
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        return f"{folder} belongs to user id {info.st_uid}, not to you ({os.getuid()})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (f"{folder} is writable by other users (mode {stat.S_IMODE(info.st_mode):o}; "
                f"chmod 700 it)")
    return None


def unsafe_ancestor_reason(folder):
    """Why the folders above ``folder`` make it unsafe for compiled code, or ``None``: as ssh's
    StrictModes, each must belong to the user or to root and be writable by nobody else unless
    its sticky bit is set (as ``/tmp``'s), or another user could swap ``folder`` for their own."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    for parent in Path(folder).expanduser().resolve().parents:
        if not parent.exists():
            continue  # created by fnnet, mode 0700
        info = parent.stat()
        if uid is not None and info.st_uid not in (0, uid):
            return f"{parent}, above it, belongs to user id {info.st_uid}, not to you or root"
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
            return (f"{parent}, above it, is writable by other users (mode "
                    f"{stat.S_IMODE(info.st_mode):o}, not sticky)")
    return None


def _make_private(folder):
    """Create ``folder`` and any missing parents with mode 0700."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    for path in reversed(missing):
        path.mkdir(mode=0o700)
        path.chmod(0o700)  # whatever the umask


def prepare_cache_folder(folder):
    """``folder/<machine_key()>``, created with mode 0700, after checking that both are safe.

    Args:
        folder: the cache folder the user chose (or the default).

    Returns:
        ``(path, None)`` to use, or ``(None, reason)`` when the folder cannot be used safely
        (another owner, writable by others, not a folder, cannot be created).
    """
    target = Path(folder).expanduser() / machine_key()
    try:
        reason = unsafe_ancestor_reason(target.parent)
        if reason:
            return None, reason
        for path in (target.parent, target):
            if not path.exists():
                _make_private(path)
            reason = unsafe_folder_reason(path)
            if reason:
                return None, reason
    except OSError as e:
        return None, f"{e.filename or target}: {e.strerror or e}"
    return target, None


DAMAGED = "Error reading persistent compilation cache entry"


def _damaged_cache(prog, path, damaged):
    """JAX warns (with its own file paths) once per program whose cache entry it cannot read
    (``damaged``: those warnings, held back), and never replaces the entry. Say it once, in one
    line, and empty the folder (``path``) so that the next run compiles afresh."""
    if not damaged or path is None:
        return
    removed = 0
    for entry in path.iterdir():
        if entry.is_file():
            with contextlib.suppress(OSError):
                entry.unlink()
                removed += 1
    print(f"{prog}: warning: {len(damaged)} compiled program(s) in the compile cache {path} could "
          f"not be read (a damaged cache); they were compiled again, and the folder's {removed} "
          f"entries were removed so that the next run caches them afresh", file=sys.stderr,
          flush=True)


def cache_folder_of(args):
    """The compile cache folder ``args`` asks for (``--compile-cache`` or the default), or
    ``None`` with ``--no-compile-cache``."""
    if getattr(args, "no_compile_cache", False):
        return None
    return args.compile_cache if args.compile_cache is not None else default_cache_folder()


@contextlib.contextmanager
def compile_cache(args):
    """While the command runs, JAX's persistent compilation cache in the folder ``args`` asks for
    (``cache_folder_of``), or no persistent cache at all with ``--no-compile-cache``; the previous
    JAX settings are restored afterwards. A folder that is not safe is refused with a one-line
    warning on stderr, and the command runs uncached. Sets ``args.compile_cache_path`` (``None``
    when uncached).

    Args:
        args: the parsed command line (``args.prog`` names the command in the warning).
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    folder, path = cache_folder_of(args), None
    if folder is not None:
        path, reason = prepare_cache_folder(folder)
        if reason:
            print(f"{args.prog}: warning: not using the compile cache in {folder}: {reason}; "
                  f"cached programs are code that fnnet runs, so the folder must be yours and "
                  f"writable only by you; running uncached", file=sys.stderr, flush=True)
    args.compile_cache_path = path
    settings = {"jax_enable_compilation_cache": path is not None}
    if path is not None:
        settings.update(jax_compilation_cache_dir=str(path), **CACHE_SETTINGS)
    saved = {name: getattr(jax.config, name) for name in settings}
    try:
        for name, value in settings.items():
            jax.config.update(name, value)
        compilation_cache.reset_cache()  # read the new settings at the next compile
        damaged, show = [], warnings.showwarning

        def showwarning(message, category, *rest, **kwargs):
            if str(message).startswith(DAMAGED):
                damaged.append(message)  # said once, after the command
            else:
                show(message, category, *rest, **kwargs)

        warnings.showwarning = showwarning
        try:
            yield
        finally:
            warnings.showwarning = show
            _damaged_cache(args.prog, path, damaged)
    finally:
        for name, value in saved.items():
            jax.config.update(name, value)
        compilation_cache.reset_cache()
