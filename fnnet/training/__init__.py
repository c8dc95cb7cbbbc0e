"""Training: the state, the step, the epoch program, ``fit``, and what happens after each epoch.

- ``state``: ``TrainState``, everything that changes while training, for one model or K stacked.
- ``step``: ``train_step``, the one pure ``(state, x, y, key) -> (state, stats)``.
- ``epoch``: ``epoch_program`` (a shuffle and a ``lax.scan`` of the step, one compiled program)
  and ``EpochRunner`` (compiles it, runs it, replays a diverged epoch with the guard on).
- ``config``: ``RunConfig``, a run's configuration, built once and compared on resume.
- ``evaluate``: ``to_device`` and ``evaluate``.
- ``callbacks``: ``EpochRecord``, the history, progress, checkpoints, the divergence warning.
- ``stream``: ``TokenWindows``, a token stream trained on by random windows drawn in-program.
- ``fit``: the outline of training, built from the above.
"""

from .callbacks import (
    HISTORY_KEYS,
    EpochRecord,
    epoch_record,
    print_progress,
    save_checkpoint,
    warn_diverged,
)
from .config import RunConfig
from .epoch import EpochRunner, epoch_program
from .evaluate import evaluate, to_device
from .fit import fit
from .state import TrainState
from .step import DIVERGENCE_FACTOR, GRADS, train_step
from .stream import TokenWindows, draw_windows

__all__ = [
    "DIVERGENCE_FACTOR", "GRADS", "HISTORY_KEYS", "EpochRecord", "EpochRunner", "RunConfig",
    "TokenWindows", "TrainState", "draw_windows", "epoch_program", "epoch_record", "evaluate",
    "fit", "print_progress", "save_checkpoint", "to_device", "train_step", "warn_diverged",
]
