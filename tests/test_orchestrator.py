"""The orchestrator end to end at tiny sizes: plan/dedup, reuse across commands, resume, faults, config errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import mlflow
import pytest
from sweep_helpers import command, completed_units, run, runs, unit_runs

from clile_core.config import RunConfig, to_dict
from orchestrator.resources import explain, plan_resources
from orchestrator.store import ArtifactStore
from orchestrator.sweep import longest_first
from orchestrator.units import Unit

GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    """One full 3-fold ablation, shared by the tests that read its results."""
    cwd = tmp_path_factory.mktemp("ablation")
    result = run(cwd, "ablate")
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd, result


def test_ablation_trains_each_shared_stage_once(ablation):
    cwd, result = ablation
    store = cwd / "clile_store"
    assert len(completed_units(store, "stage0")) == 3  # one backbone per fold, shared by all six variants
    assert len(completed_units(store, "stage1")) == 6  # per fold: one for A2/A3, one for A4/CL-ILE
    assert len(completed_units(store, "stage2")) == 15  # five variants with stage II × three folds
    children = unit_runs(runs(cwd, "clile-ablation"))
    assert len(children) == 24 and set(children["status"]) == {"FINISHED"}
    assert children.groupby("tags.stage").size().to_dict() == {"stage0": 3, "stage1": 6, "stage2": 15}
    shared = children[children["tags.stage"] == "stage1"]["tags.variant"]
    assert sorted(set(shared)) == ["A2,A3", "A4,CL-ILE"]
    assert "| CL-ILE |" in result.stdout and "| A0 |" in result.stdout and "3/3" in result.stdout
    # each unit drew its own figures in its trial; they live in its store folder and on its run
    for key in completed_units(store):
        drawn = {p.name for p in (store / "units" / key / "figures").glob("*.png")}
        assert "curves.png" in drawn and ("fig3_identity_embeddings.png" in drawn) == key.startswith("stage1")
    client = mlflow.MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    assert {a.path for a in client.list_artifacts(children.iloc[0]["run_id"], "figures")} >= {"figures/curves.png"}


def golden_of(stdout: str, store: Path) -> tuple[str, dict[str, dict[str, float]]]:
    """What must not change: the printed tables and every unit's test/seen average F1 (4 decimals), by unit name."""
    units = {}
    for key in completed_units(store):
        record, name = json.loads((store / "units" / key / "unit.json").read_text()), ArtifactStore(store).load_spec(key).name()
        units[name] = {m: round(record["metrics"][m], 4) for m in ("test_f1_avg", "seen_f1_avg")}
    return stdout, dict(sorted(units.items()))


def test_ablation_matches_the_golden_table(ablation):
    """Behaviour unchanged: the tiny 3-fold ablation (all three stages) prints the table and trains the units it
    did at the commit that stored tests/golden/. After an intended change of results, regenerate with
    ``CLILE_REGEN_GOLDEN=1 python -m pytest -q tests/test_orchestrator.py -k golden`` and commit the diff."""
    cwd, result = ablation
    table, units = golden_of(result.stdout, cwd / "clile_store")
    if os.environ.get("CLILE_REGEN_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        (GOLDEN / "ablation_tiny_table.md").write_text(table)
        (GOLDEN / "ablation_tiny_units.json").write_text(json.dumps(units, indent=1, ensure_ascii=False) + "\n")
    assert table == (GOLDEN / "ablation_tiny_table.md").read_text()
    assert units == json.loads((GOLDEN / "ablation_tiny_units.json").read_text())


def test_child_runs_carry_names_params_metrics_and_tags(ablation):
    cwd, _ = ablation
    frame = runs(cwd, "clile-ablation")
    parents = frame[frame["tags.unit_key"].isna()]
    assert len(parents) == 1 and parents.iloc[0]["tags.mlflow.runName"].startswith("ablate · synthetic · ")
    child = frame[frame["tags.mlflow.runName"] == "CL-ILE · fold 2 · seed 0 · resnet18 · stage II"].iloc[0]
    assert child["tags.mlflow.parentRunId"] == parents.iloc[0]["run_id"]
    assert child["params.stage2.tau"] == "2.0" and child["params.model.backbone"] == "resnet18"
    assert 0 <= child["metrics.test_f1_avg"] <= 100 and "metrics.test_f1_AU24" in frame
    assert {child["tags.dataset"], child["tags.fold"], child["tags.stage"]} == {"synthetic", "2", "stage2"}
    assert child["tags.unit_key"].startswith("stage2-") and child["tags.code_version"]


def test_rerun_reuses_everything_and_backbones_reuses_resnet18(ablation):
    cwd, _ = ablation
    again = run(cwd, "ablate")
    assert again.returncode == 0 and "reused 24 unit(s), trained 0" in again.stderr
    frame = runs(cwd, "clile-ablation")
    newest = frame[frame["tags.unit_key"].isna()].sort_values("start_time").iloc[-1]["run_id"]
    reused = frame[frame["tags.mlflow.parentRunId"] == newest]
    assert len(reused) == 24 and reused["tags.reused_from"].notna().all()
    assert set(reused["tags.reused_from"]) <= set(frame["run_id"])  # points at the run that trained it

    result = run(cwd, "backbones", "--backbones", "resnet18", "--folds", "1", "2", "3")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "reused 3 unit(s), trained 0" in result.stderr
    assert "| resnet18 |" in result.stdout


def test_dry_run_lists_units_and_cache_state(ablation):
    cwd, _ = ablation
    result = run(cwd, "ablate", "--dry-run", "--folds", "1")
    assert result.returncode == 0
    assert "8 units: 8 cached, 0 to run" in result.stdout and "A2+A3 · fold 1 · seed 0 · resnet18 · stage I" in result.stdout
    fresh = run(cwd, "ablate", "--dry-run", "--folds", "1", "--set", "stage2.tau=1.0")
    assert "will run" in fresh.stdout and "8 units: 3 cached, 5 to run" in fresh.stdout
    # a second seed repeats every unit (shared between variants per seed); seed 0's are the cached ones
    seeds = run(cwd, "ablate", "--dry-run", "--folds", "1", "--seeds", "0", "1")
    assert "16 units: 8 cached, 8 to run" in seeds.stdout and "A2+A3 · fold 1 · seed 1 · resnet18 · stage I" in seeds.stdout


def test_failing_unit_is_retried_then_reported_and_the_rest_finishes(tmp_path):
    # --gpus-per-trial 1 on this CPU-only machine also checks that no trial waits for a GPU forever
    result = run(tmp_path, "ablate", "--folds", "1", "--variants", "A0", "A1", "CL-ILE", "--retries", "1",
                 "--gpus-per-trial", "1", env={"CLILE_FAIL_UNITS": "A1"})
    assert result.returncode == 1
    assert "no GPU available, every trial runs on CPU" in result.stderr
    assert "injected failure" in result.stderr
    table = result.stdout
    assert "| A1 | – | – | – | ✓ | — | 0/1 |" in table and "| CL-ILE | ✓ | ✓ | ✓ | ✓ |" in table
    children = unit_runs(runs(tmp_path, "clile-ablation"))
    failed = children[children["status"] == "FAILED"]
    assert list(failed["tags.mlflow.runName"]) == ["A1 · fold 1 · seed 0 · resnet18 · stage II"]
    assert "injected failure" in failed.iloc[0]["tags.error"] and failed.iloc[0]["tags.retries"] == "1"
    assert (children["status"] != "RUNNING").all()
    assert len(children[children["status"] == "FINISHED"]) == 3  # stage 0, stage I, CL-ILE's stage II


def test_resume_after_kill_9_leaves_one_finished_child_per_unit(tmp_path):
    sweep = ("--folds", "1", "--variants", "A0", "A2", "A4", "CL-ILE")  # 6 units: stage 0, two stage I, three stage II
    args = command("ablate", *sweep)
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    store = tmp_path / "clile_store"
    deadline = time.time() + 300
    while time.time() < deadline and not completed_units(store, "stage1"):
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = completed_units(store)
    assert done_before and len(done_before) < 6, "the kill should land mid-sweep"

    result = run(tmp_path, "ablate", *sweep)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming unfinished parent run" in result.stderr
    assert len(completed_units(store)) == 6
    frame = runs(tmp_path, "clile-ablation")
    parents = frame[frame["tags.unit_key"].isna()]
    assert len(parents) == 1 and parents.iloc[0]["status"] == "FINISHED"
    children = unit_runs(frame)
    finished = children[children["status"] == "FINISHED"]
    assert finished["tags.unit_key"].value_counts().max() == 1 and len(finished) == 6
    assert (frame["status"] != "RUNNING").all()
    assert not list((store / "units").glob(".tmp-*"))


def test_search_reports_best_point_beside_paper_defaults(tmp_path):
    result = run(tmp_path, "search", "--folds", "1", "--num-samples", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "best point (mean validation F1" in result.stdout
    assert "| paper defaults | this run |" in result.stdout and "| search best | this run |" in result.stdout
    assert "| search best | this run | — |" not in result.stdout  # its units, trained in a trial, are reused
    frame = runs(tmp_path, "clile-search")
    trials = frame[frame["tags.stage"] == "search-trial"]
    assert len(trials) == 2 and set(trials["status"]) == {"FINISHED"}
    assert "params.stage2.tau" in trials and trials["metrics.val_f1_avg"].notna().all()
    assert "metrics.test_f1_avg" not in trials or trials["metrics.test_f1_avg"].isna().all()  # test never seen by trials


@pytest.mark.parametrize(
    "flag, body, fragment",
    [("--variants-file", "variants: {X: {stage1: true, id_loss: true, orth: true, contra: true, typo: 1}}", "unknown key"),
     ("--space-file", "space: {stage2.tau: {type: loguniform, low: 0, high: 1}}", "loguniform needs low > 0"),
     ("--backbones-file", "backbones: [resnet18, vgg99]", "vgg99")],
)
def test_bad_yaml_is_refused_with_file_and_key(tmp_path, flag, body, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    module = {"--variants-file": "ablate", "--space-file": "search", "--backbones-file": "backbones"}[flag]
    result = run(tmp_path, module, flag, str(path), "--dry-run")
    assert result.returncode == 2
    assert fragment in result.stderr and str(path) in result.stderr and "Traceback" not in result.stderr


def test_gpu_requests_follow_the_cluster():
    cpu_only = {"CPU": 4.0}
    assert plan_resources(cpu_only, "stage0", 0.5, None).gpu == 0.0
    assert plan_resources(cpu_only, "stage2", 1.0, 2).as_ray() == {"cpu": 2, "gpu": 0.0}
    assert "no GPU available" in explain(cpu_only, 0.25)
    with_gpu = {"CPU": 8.0, "GPU": 2.0}
    assert plan_resources(with_gpu, "stage0", 0.25, None).gpu == 1.0  # the backbone gets a whole GPU
    assert plan_resources(with_gpu, "stage1", 0.25, None).gpu == 0.25  # cached-feature stages share one
    assert "no GPU available" not in explain(with_gpu, 0.25)


def test_costliest_stage0_units_start_first():
    base = to_dict(RunConfig())

    def unit(stage: str, backbone: str) -> Unit:
        config = {**base, "model": {**base["model"], "backbone": backbone}}
        return Unit(stage, 1, config, {"stage0": "up"} if stage != "stage0" else {}, "manifest")

    order = longest_first([unit("stage0", "resnet18"), unit("stage0", "swin_t"), unit("stage0", "resnet152")])
    assert [u.backbone for u in order] == ["resnet152", "swin_t", "resnet18"]
    later = [unit("stage2", "resnet18"), unit("stage2", "resnet50")]
    assert [u.backbone for u in longest_first(later)] == ["resnet18", "resnet50"]  # equal cost: order kept
