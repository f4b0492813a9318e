"""Live progress of a sweep: units done / running / queued and each running unit's epoch, loss, val F1,
elapsed time and ETA.

On a terminal one ``rich`` view updates in place; otherwise (CI logs, a file) a plain summary line is
written every ``period`` seconds. ``view`` is the pure part: trial states in, rows out.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from clile_core.names import TRAIN_LOSS, VAL_F1_AVG
from clile_core.stages import get_stage
from orchestrator.units import Unit

QUEUED, RUNNING, DONE, FAILED, SKIPPED = "queued", "running", "done", "failed", "skipped"
COLUMNS = ("unit", "epoch", "loss", "val F1", "elapsed", "ETA")


@dataclass
class UnitState:
    name: str
    epochs: int  # the stage's configured epochs (early stopping may end it sooner)
    status: str = QUEUED
    started: float | None = None  # when its (latest) trial started
    ended: float | None = None
    epoch: int = 0
    loss: float = math.nan
    val_f1: float = math.nan


def clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "–"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}:{secs:02d}" if minutes < 60 else f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def _number(value: float, fmt: str) -> str:
    return format(value, fmt) if math.isfinite(value) else "–"


def view(states: dict[str, UnitState], now: float) -> tuple[dict[str, int], list[tuple[str, ...]]]:
    """Counts per status, and one row per running unit (``COLUMNS``), in the order they started.

    ETA assumes the remaining epochs take as long as the ones done (before the first epoch: unknown).
    """
    counts = {status: sum(s.status == status for s in states.values())
              for status in (DONE, RUNNING, QUEUED, FAILED, SKIPPED)}
    running = sorted((s for s in states.values() if s.status == RUNNING), key=lambda s: s.started or 0.0)
    rows = []
    for state in running:
        elapsed = now - (state.started or now)
        eta = elapsed / state.epoch * max(state.epochs - state.epoch, 0) if state.epoch else math.nan
        rows.append((state.name, f"{state.epoch}/{state.epochs}", _number(state.loss, ".3f"),
                     _number(state.val_f1, ".1f"), clock(elapsed), clock(eta)))
    return counts, rows


def headline(counts: dict[str, int], elapsed: float) -> str:
    trouble = "".join(f", {counts[status]} {status}" for status in (FAILED, SKIPPED) if counts[status])
    return (f"{counts[DONE]}/{sum(counts.values())} units done, {counts[RUNNING]} running, "
            f"{counts[QUEUED]} queued{trouble} · {clock(elapsed)} elapsed")


class Progress:
    """Fed by the sweep's Tune callback; renders to ``stream`` (default: stderr, beside the other messages)."""

    def __init__(self, units: list[Unit], stream: TextIO | None = None, period: float = 30.0,
                 terminal: bool | None = None):
        self.states = {u.key: UnitState(u.name(), int(u.config.get(get_stage(u.stage).section, {}).get("epochs", 0)))
                       for u in units}
        self.stream, self.terminal = stream, terminal
        self.period, self.started, self.last_line = period, time.time(), 0.0
        self.console: Console | None = None
        self.live: Live | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks (and so this) with the run config; the console holds locks and a stream.
        return {**self.__dict__, "stream": None, "console": None, "live": None}

    def __enter__(self) -> "Progress":
        self.console = Console(file=self.stream or sys.stderr, force_terminal=self.terminal, highlight=False)
        if self.console.is_terminal:
            # Messages written to stderr meanwhile (unit start/done, warnings) scroll above the view instead
            # of tearing it; stdout, where the command's table goes, is left alone.
            self.live = Live(console=self.console, refresh_per_second=2, redirect_stdout=False,
                             get_renderable=self._renderable)
            self.live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live:
            self.live.stop()
        else:
            self._line()

    def start(self, key: str) -> None:
        state = self.states[key]
        state.status, state.started = RUNNING, time.time()

    def epoch(self, key: str, result: dict[str, Any]) -> None:
        state = self.states[key]
        if "epoch" in result:
            state.epoch = int(result["epoch"])
            state.loss = float(result.get(TRAIN_LOSS, math.nan))
            state.val_f1 = float(result.get(VAL_F1_AVG, math.nan))

    def end(self, key: str, ok: bool) -> None:
        state = self.states[key]
        state.status, state.ended = (DONE if ok else FAILED), time.time()

    def skip(self, key: str) -> None:
        self.states[key].status = SKIPPED

    def retry(self, key: str) -> None:
        state = self.states[key]
        state.status, state.epoch, state.loss, state.val_f1 = QUEUED, 0, math.nan, math.nan

    def timeline(self) -> dict[str, dict[str, Any]]:
        """Each unit's trial start and end in seconds since this view began (``None``: never reached), for
        ``bench/sweep_overhead.py`` to split a sweep's wall time into units' work and what lies between."""
        def since(moment: float | None) -> float | None:
            return None if moment is None else round(moment - self.started, 3)

        return {key: {"name": s.name, "status": s.status, "trial_start": since(s.started), "trial_end": since(s.ended)}
                for key, s in self.states.items()}

    def tick(self) -> None:
        """Called on every Tune step: the plain line when ``period`` has passed (the live view redraws itself)."""
        if self.console and not self.live and time.time() - self.last_line >= self.period:
            self._line()

    def _line(self) -> None:
        now = time.time()
        self.last_line = now
        counts, rows = view(self.states, now)
        running = "; ".join(f"{r[0]} epoch {r[1]} loss {r[2]} val F1 {r[3]} ({r[4]}, ETA {r[5]})" for r in rows)
        self.console.print(f"[progress] {headline(counts, now - self.started)}" + (f" · {running}" if running else ""),
                           markup=False, soft_wrap=True)

    def _renderable(self) -> Table:
        now = time.time()
        counts, rows = view(self.states, now)
        table = Table(*COLUMNS, title=headline(counts, now - self.started), title_justify="left", expand=False)
        for row in rows:
            table.add_row(*row)
        return table
