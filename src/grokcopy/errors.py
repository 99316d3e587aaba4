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


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says where to resume from. A KeyboardInterrupt still, so
    nothing that catches errors (a sweep going on to its next member) swallows it."""


def one_line(err: BaseException | str) -> str:
    """The error's message on one line (library errors often span several), or its type's name."""
    text = " ".join(str(err).split())
    return text or (type(err).__name__ if isinstance(err, BaseException) else "")


def main_error(message: str, code: int = 2) -> None:
    """Print a one-line error the way argparse does and exit (2: bad input, 1: the run failed)."""
    print(f"grokcopy: error: {one_line(message)}", file=sys.stderr)
    raise SystemExit(code)
