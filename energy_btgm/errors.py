"""The two kinds of error a user can act on, which the command line turns into exit codes.

- ``ParameterError`` (a ``ValueError``): an option or argument has a value the step cannot take
  (a time zone that does not exist, a level outside (0, 1)); exit code 2, like argparse's own errors.
- every other error the library raises on purpose (``ValueError``, ``FileNotFoundError``, the
  readers' ``InputError``, training's ``TrainingError``): the data or the store is not what the step
  needs; exit code 1. Each names the file or field and the fix.

A base module: it imports nothing.
"""


class ParameterError(ValueError):
    """A parameter value the step cannot take; the message names the option and what it accepts."""


class TrainingError(RuntimeError):
    """Training cannot go on (diverged, bad data); the last good checkpoint is kept."""


class TuningError(RuntimeError):
    """The β search cannot go on: a quantity diverged (loss, gradient, KL); the message says which and what to try."""


class WriteError(OSError):
    """An output could not be written (disk full, read-only or forbidden location); names the path and the fix.

    The previous output at that path is untouched: writes go to a temporary sibling and are renamed.
    """

    def __str__(self) -> str:
        return self.strerror


class StoreBusy(RuntimeError):
    """Another run holds the store's lock; the message says since when, its run id and process."""


# what a step raises on purpose about the data or the store (exit code 1, no traceback)
EXPECTED = (ValueError, OSError, TrainingError, TuningError, StoreBusy)
