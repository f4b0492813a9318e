"""Live progress: the view model (trial states -> rows) and the plain lines written when not on a terminal."""

from __future__ import annotations

import io
import math
import pickle

from clile_core.config import RunConfig, to_dict
from orchestrator.progress import COLUMNS, DONE, QUEUED, RUNNING, Progress, UnitState, clock, view
from orchestrator.units import Unit


def test_view_rows_running_units_with_epoch_loss_f1_elapsed_and_eta():
    states = {
        "a": UnitState("A0 · fold 1 · stage 0", 10, RUNNING, started=100.0, epoch=4, loss=0.51234, val_f1=41.26),
        "b": UnitState("A2 · fold 1 · stage I", 5, RUNNING, started=90.0),  # no epoch yet: no ETA
        "c": UnitState("CL-ILE · fold 1 · stage II", 5, QUEUED),
        "d": UnitState("A1 · fold 1 · stage II", 5, DONE),
    }
    counts, rows = view(states, now=140.0)
    assert counts == {"done": 1, "running": 2, "queued": 1, "failed": 0, "skipped": 0}
    # started first comes first; 40 s for 4 of 10 epochs -> 60 s to go
    assert rows == [("A2 · fold 1 · stage I", "0/5", "–", "–", "0:50", "–"),
                    ("A0 · fold 1 · stage 0", "4/10", "0.512", "41.3", "0:40", "1:00")]
    assert len(rows[0]) == len(COLUMNS)


def test_clock_formats():
    assert [clock(5), clock(61), clock(3725), clock(math.nan)] == ["0:05", "1:01", "1:02:05", "–"]


def _units() -> list[Unit]:
    base = to_dict(RunConfig())
    stage0 = Unit("stage0", 1, base, {}, "m")
    return [stage0, Unit("stage1", 1, base, {"stage0": stage0.key}, "m")]


def test_plain_lines_when_not_a_terminal():
    stream = io.StringIO()
    stage0, stage1 = _units()
    with Progress([stage0, stage1], stream=stream, period=0.0) as progress:
        assert progress.live is None
        assert pickle.loads(pickle.dumps(progress)).states.keys() == progress.states.keys()  # Tune pickles callbacks
        progress.start(stage0.key)
        progress.epoch(stage0.key, {"epoch": 1, "train_loss": 0.75, "val_f1_avg": 33.3})
        progress.tick()
        progress.end(stage0.key, ok=True)
        progress.skip(stage1.key)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and all(line.startswith("[progress] ") for line in lines)
    epochs = stage0.run_config().stage0.epochs
    assert "0/2 units done, 1 running, 1 queued" in lines[0]
    assert f"resnet18 · stage 0 epoch 1/{epochs} loss 0.750 val F1 33.3" in lines[0] and "ETA" in lines[0]
    assert "1/2 units done, 0 running, 0 queued, 1 skipped" in lines[1]
    assert "\x1b[" not in stream.getvalue()  # no cursor or colour codes in a log


def test_terminal_view_is_a_live_table():
    stream = io.StringIO()
    stage0, stage1 = _units()
    with Progress([stage0, stage1], stream=stream, terminal=True) as progress:
        progress.start(stage0.key)
        progress.epoch(stage0.key, {"epoch": 2, "train_loss": 0.5, "val_f1_avg": 40.0})
        progress.live.refresh()
    out = stream.getvalue()
    assert "\x1b[" in out  # redrawn in place
    assert "0/2 units done, 1 running, 1 queued" in out and "0.500" in out and "40.0" in out and "val F1" in out


def test_timeline_has_each_trials_start_and_end_since_the_view_began(monkeypatch):
    clock_now = iter([1000.0, 1002.5, 1010.0, 1011.0])
    monkeypatch.setattr("orchestrator.progress.time.time", lambda: next(clock_now))
    stage0, stage1 = _units()
    progress = Progress([stage0, stage1], stream=io.StringIO())  # began at 1000
    progress.start(stage0.key)  # 1002.5
    progress.end(stage0.key, ok=True)  # 1010
    progress.start(stage1.key)  # 1011, never ended
    timeline = progress.timeline()
    assert timeline[stage0.key] == {"name": stage0.name(), "status": DONE, "trial_start": 2.5, "trial_end": 10.0}
    assert timeline[stage1.key]["trial_start"] == 11.0 and timeline[stage1.key]["trial_end"] is None
