"""Every error grokcopy raises on purpose, and the one-line message a user sees for it.

A researcher who mistypes a field, points at a missing checkpoint or loses the Hub should read
one line that names the field or file at fault, not a traceback: each class below carries such
a line, `one_line` turns any other exception into one, and `main_error` prints it and exits.
"""

from __future__ import annotations

import sys


class ConfigError(ValueError):
    """A bad config or command line: the message is one line that names the field or file at fault."""


class CopyTaskError(ValueError):
    """The copy test cannot be built for this tokenizer / context (the message says why)."""


class UnsupportedArchitectureError(ValueError):
    """The model's architecture (config.model_type) has no weight mapping in grokcopy.analysis."""


class SeriesError(ValueError):
    """A checkpoint series cannot be analysed (the message names the repo / revision and why)."""


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite; nothing from that point on was saved."""


class CheckpointSaveError(RuntimeError):
    """Saving a checkpoint failed (e.g. a full disk); the half-written folder was removed."""


class RunWriteError(RuntimeError):
    """The run could not write its folder (a full disk, a read-only file system); the message names the
    file, the cause and the checkpoint to go on from."""


# A run stopped by SIGTERM / SIGUSR1 (a preemption) exits with this code once its checkpoint is saved:
# sysexits' EX_TEMPFAIL, "try again later", for a requeue script to tell from a failure (1) or Ctrl-C (130).
EXIT_PREEMPTED = 75


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C or a signal; the message says where to resume from, `exit_code` is 130
    (Ctrl-C) or EXIT_PREEMPTED. A KeyboardInterrupt still, so nothing that catches errors (a sweep going
    on to its next member) swallows it."""

    def __init__(self, message: str = "", exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code


def one_line(err: BaseException | str) -> str:
    """The error's message on one line (library errors often span several), or its type's name."""
    text = " ".join(str(err).split())
    return text or (type(err).__name__ if isinstance(err, BaseException) else "")


def main_error(message: str, code: int = 2) -> None:
    """Print a one-line error the way argparse does and exit (2: bad input, 1: the run failed)."""
    print(f"grokcopy: error: {one_line(message)}", file=sys.stderr)
    raise SystemExit(code)
