"""A search killed with kill -9 and rerun continues its Optuna study: no trial repeated, numbering continues,
and the best point is the one an uninterrupted search with the same seed reports."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time

import optuna
from optuna.trial import TrialState
from sweep_helpers import command, run

from orchestrator import search

SPACE = """num_samples: 3
seed: 0
space:
  stage2.tau: {type: loguniform, low: 0.1, high: 4.0}
  stage1.lam: {type: uniform, low: 0.1, high: 0.9}
"""


def _complete_trials(db) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
    except sqlite3.Error:  # the schema is being created
        return 0


def test_search_killed_mid_study_resumes_the_same_study(tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    args = ("--folds", "1", "--max-concurrent", "1", "--space-file", str(tmp_path / "space.yaml"))
    proc = subprocess.Popen(command("search", *args), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    db = tmp_path / "optuna.db"
    deadline = time.time() + 400
    while time.time() < deadline and _complete_trials(db) < 1 and proc.poll() is None:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    (name,) = optuna.get_all_study_names(f"sqlite:///{db}")
    before = optuna.load_study(study_name=name, storage=f"sqlite:///{db}").get_trials()
    complete_before = [t for t in before if t.state == TrialState.COMPLETE]
    assert 1 <= len(complete_before) < 3, "the kill should land mid-search"

    result = run(tmp_path, "search", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{len(complete_before)} trial(s) already ended" in result.stderr
    trials = optuna.load_study(study_name=name, storage=f"sqlite:///{db}").get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3  # num_samples counts the trials of both runs
    assert {t.number for t in complete_before} <= {t.number for t in complete}  # the first run's trials kept
    points = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(points)) == 3  # no point drawn twice
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # numbering continued
    assert "best point (mean validation F1" in result.stdout
    # a trial killed mid-run is recorded FAIL and its point rerun once, never left RUNNING
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for failed in (t for t in trials if t.state == TrialState.FAIL):
        assert [t.user_attrs.get("rerun_of") for t in complete].count(failed.number) == 1

    # An uninterrupted search with the same seed, on the same store (its points, if the same, are cached
    # units, so it costs little): the same points and the same best point.
    fresh = tmp_path / "uninterrupted"
    fresh.mkdir()
    whole = run(fresh, "search", *args, "--store", str(tmp_path / "clile_store"))
    assert whole.returncode == 0, whole.stderr[-3000:]
    (other,) = optuna.get_all_study_names(f"sqlite:///{fresh / 'optuna.db'}")
    reference = optuna.load_study(study_name=other, storage=f"sqlite:///{fresh / 'optuna.db'}").get_trials()
    assert sorted(tuple(sorted(t.params.items())) for t in reference) == sorted(points)
    best_line = [line for line in result.stdout.splitlines() if line.startswith("best point")]
    assert best_line and best_line == [line for line in whole.stdout.splitlines() if line.startswith("best point")]


def _objective(trial) -> float:
    return -(trial.suggest_float("x", -3, 3) - 1) ** 2 - trial.suggest_float("y", 0.1, 4.0, log=True)


def test_a_resumed_study_draws_the_points_of_an_uninterrupted_one(tmp_path):
    """Pure Optuna, past TPE's random start-up: trial 2 is 'killed' (FAIL), its point rerun, and every
    later draw still equals the uninterrupted study's."""
    from orchestrator.search import ResumableSampler

    startup = optuna.samplers.TPESampler().__dict__.get("_n_startup_trials", 10)
    n = startup + 4
    uninterrupted = optuna.create_study(sampler=ResumableSampler(7), direction="maximize")
    uninterrupted.optimize(_objective, n_trials=n)

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    killed = optuna.create_study(storage=url, study_name="s", sampler=ResumableSampler(7), direction="maximize")
    killed.optimize(_objective, n_trials=2)
    victim = killed.ask()  # the driver dies while this trial runs
    _, ended = search.open_study(url, "s")  # the rerun: RUNNING -> FAIL, its point enqueued
    assert ended == 2
    resumed = optuna.load_study(storage=url, study_name="s", sampler=ResumableSampler(7))
    resumed.optimize(_objective, n_trials=n - 2)
    done = [t for t in resumed.get_trials() if t.state == TrialState.COMPLETE]
    assert [t.params for t in done] == [t.params for t in uninterrupted.get_trials()]
    assert done[2].user_attrs["rerun_of"] == victim.number
    assert resumed.best_params == uninterrupted.best_params
