"""A search killed with kill -9 and rerun continues its Optuna study: no trial repeated, numbering continues."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time

import optuna
from optuna.trial import TrialState
from sweep_helpers import command, run

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
