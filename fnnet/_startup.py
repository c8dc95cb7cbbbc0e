"""Ctrl-C while the ``fnnet`` program starts: deferred, then honoured by ``fnnet.cli.main``.

Importing JAX takes a second or two; a ``KeyboardInterrupt`` raised inside it is a traceback from
the imports, or is lost in JAX's garbage-collection callback (the run then goes on). So when this
process is the ``fnnet`` program (its ``argv[0]`` is ``fnnet``, or it was started as
``python -m fnnet.cli``) and SIGINT still has Python's default handler, a handler that only
records the signal is installed before anything heavy is imported; ``fnnet.cli.main`` puts the
default back and, if a signal came, exits 130 with one line. A library import (any other
program) changes nothing. ``fnnet launch`` installs the same handler in the processes it starts.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

DEFERRED = "fnnet_deferred_interrupts"  # the handler's list of the signals it received


def _is_the_program():
    orig = list(getattr(sys, "orig_argv", []))
    started_as_module = any(orig[i:i + 2] == ["-m", "fnnet.cli"] for i in range(len(orig)))
    return bool(sys.argv) and os.path.basename(sys.argv[0]) == "fnnet" or started_as_module


def _install():
    if threading.current_thread() is not threading.main_thread() or not _is_the_program():
        return
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return  # someone else's handler (fnnet launch's bootstrap, a host program): leave it

    def deferred(signum, frame):
        getattr(deferred, DEFERRED).append(signum)

    setattr(deferred, DEFERRED, [])
    signal.signal(signal.SIGINT, deferred)


_install()
