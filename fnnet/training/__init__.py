"""Training: the state, the epoch program, ``fit``, and what happens after each epoch.

- ``state``: ``TrainState``, everything that changes while training, for one model or K stacked.
- ``epoch``: ``train_step``, ``epoch_program`` (one epoch as one compiled ``lax.scan``),
  ``EpochRunner`` (compiles it, runs it, replays a diverged epoch with the guard on).
- ``evaluate``: ``to_device`` and ``evaluate``.
- ``callbacks``: ``EpochRecord``, the history, progress, checkpoints, the divergence warning.
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
from .epoch import EpochRunner, epoch_program, make_epoch, train_step
from .evaluate import evaluate, to_device
from .fit import GRADS, fit
from .state import TrainState

__all__ = [
    "GRADS", "HISTORY_KEYS", "EpochRecord", "EpochRunner", "TrainState", "epoch_program",
    "epoch_record", "evaluate", "fit", "make_epoch", "print_progress", "save_checkpoint",
    "to_device", "train_step", "warn_diverged",
]
