"""One format for what every command tells its user, on standard error: ``[component] message`` for progress
and warnings, ``error: message`` for a refusal (``log.error``; the command then exits 2). A refusal carries no
component: its message already names the file, the key or the argument to fix, and scripts and tests look
for lines starting ``error:``.

Each module asks for ``get_logger("features")`` (a child of the ``clile`` logger); only that tree gets our
handler, so Ray's, MLflow's and Optuna's loggers keep their own settings and a library embedding clile can
still reconfigure ``clile`` like any other logger.
"""

from __future__ import annotations

import logging
import sys

ROOT = "clile"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted: pytest's capture and Ray's worker log
    redirection both swap the stream after import."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # StreamHandler.__init__ assigns it; the property always wins
        pass


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.ERROR:
            return f"error: {record.getMessage()}"
        record.component = record.name.removeprefix(f"{ROOT}.")
        return super().format(record)


def _root() -> logging.Logger:
    root = logging.getLogger(ROOT)
    if not root.handlers:
        handler = _StderrHandler()
        handler.setFormatter(_Format("[%(component)s] %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False  # the user's root logger (or Ray's) would print every line twice
    return root


def get_logger(component: str) -> logging.Logger:
    """The logger whose lines read ``[component] ...``."""
    _root()
    return logging.getLogger(f"{ROOT}.{component}")
