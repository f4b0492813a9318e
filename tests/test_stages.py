"""The stage registry: what it holds, the one ``run`` signature, the upstream and key-section declarations,
and a stage registered by a test that the in-process pipeline and the orchestrator's plan pick up."""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
from pathlib import Path

import pytest

from clile_core.config import RunConfig, load_run_config, to_dict
from clile_core.data.fold_data import load_fold_data
from clile_core.names import BACKBONE_FILE, FEATURES_MARKER
from clile_core.pipeline import run_fold
from clile_core.stages import STAGES, Stage, final_stage, fold_stages, get_stage, register_stage, stage_order
from clile_core.training.common import StageResult
from clile_core.variants import Variant, get_variant
from orchestrator.progress import Progress
from orchestrator.resources import plan_resources
from orchestrator.units import Plan, Unit, add_variant_fold

REPO = Path(__file__).resolve().parents[1]
TINY = [f"data.synthetic_root={REPO / 'data' / 'synthetic'}", "data.synthetic_subjects=6", "data.synthetic_frames=12",
        "data.synthetic_size=40", "data.input_size=32", "stage0.epochs=1", "stage0.batch_size=16"]


def test_the_registry_holds_the_three_stages_in_dependency_order():
    assert list(STAGES) == ["stage0", "stage1", "stage2"]
    assert [get_stage(name).label for name in STAGES] == ["stage 0", "stage I", "stage II"]
    assert [stage_order(name) for name in STAGES] == [0, 1, 2]
    with pytest.raises(KeyError, match=r"unknown stage 'stage3'; registered stages: \['stage0', 'stage1', 'stage2'\]"):
        get_stage("stage3")


def test_every_stage_runs_with_the_same_signature():
    base = list(inspect.signature(Stage.run).parameters)
    assert base == ["self", "cfg", "data", "upstream", "out_dir", "callback"]
    for stage in STAGES.values():
        assert list(inspect.signature(type(stage).run).parameters) == base, stage.name


def test_declared_upstream_key_sections_and_artifacts():
    s0, s1, s2 = (get_stage(name) for name in ("stage0", "stage1", "stage2"))
    assert (s0.needs, s1.needs, s2.needs, s2.optional) == ((), ("stage0",), ("stage0",), ("stage1",))
    assert s0.key_sections == ("data.", "model.backbone", "model.weights", "stage0.")
    assert (s1.key_sections, s2.key_sections) == (("model.", "stage1."), ("model.", "stage2."))
    assert BACKBONE_FILE in s0.provides and "stage1.pt" in s1.provides and "model.json" in s2.provides
    assert [s.on_images for s in (s0, s1, s2)] == [True, False, False]  # only stage 0 trains on images
    assert s2.upstream_in(["stage0"]) == ["stage0"] and s2.upstream_in(["stage0", "stage1"]) == ["stage0", "stage1"]


@pytest.mark.parametrize("variant, stages, final", [("A0", ["stage0"], "stage0"), ("A1", ["stage0", "stage2"], "stage2"),
                                                     ("CL-ILE", ["stage0", "stage1", "stage2"], "stage2")])
def test_a_variant_trains_the_stages_its_switches_turn_on(variant, stages, final):
    assert [s.name for s in fold_stages(get_variant(variant))] == stages
    assert final_stage(get_variant(variant)).name == final


def test_unit_keys_follow_the_declared_sections():
    base = RunConfig()
    plan = Plan("test")
    add_variant_fold(plan, base, get_variant("CL-ILE"), 1, "manifest", seed=0)
    keys = {u.stage: u.key for u in plan.ordered()}
    tau = dataclasses.replace(base, stage2=dataclasses.replace(base.stage2, tau=0.5))
    changed = Plan("test")
    add_variant_fold(changed, tau, get_variant("CL-ILE"), 1, "manifest", seed=0)
    after = {u.stage: u.key for u in changed.ordered()}
    assert [after[s] == keys[s] for s in ("stage0", "stage1", "stage2")] == [True, True, False]
    assert plan.units[keys["stage2"]].upstream == {"stage0": keys["stage0"], "stage1": keys["stage1"]}


def test_registering_refuses_unknown_upstream_and_duplicates():
    class Orphan(Stage):
        name, label, needs = "orphan", "orphan", ("stage9",)

    with pytest.raises(ValueError, match=r"stage 'orphan' reads \['stage9'\], which are not registered"):
        register_stage(Orphan)

    class Again(Stage):
        name, label = "stage1", "again"

    with pytest.raises(ValueError, match="registered twice"):
        register_stage(Again)
    assert list(STAGES) == ["stage0", "stage1", "stage2"]


class ToyStage(Stage):
    """Every variant trains it after stage 0; it answers the table cell with the size of stage 0's backbone file."""

    name, label = "toy", "stage T"
    needs = ("stage0",)
    key_sections = ("model.dim",)
    section = "stage2"  # its training settings live in a section not named after it
    answers = True
    provides = ("toy.json",)

    def run(self, cfg, data, upstream, out_dir, callback):
        size = (Path(upstream["stage0"]) / BACKBONE_FILE).stat().st_size
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "toy.json").write_text(json.dumps({"backbone_bytes": size, "subjects": len(data.split.test_subjects)}))
        callback(self.name, 1, {"train_loss": 0.0})
        return StageResult(self.name, Path(out_dir), {"test_f1_avg": 42.0})


@pytest.fixture
def toy():
    register_stage(ToyStage)
    try:
        yield STAGES["toy"]
    finally:
        STAGES.pop("toy")


def test_a_registered_stage_runs_in_the_pipeline_after_its_upstream(toy, tmp_path):
    cfg = load_run_config("synthetic", None, [*TINY, f"features.cache_dir={tmp_path / 'features'}"])
    epochs = []
    fold_run = run_fold(cfg, get_variant("A0"), 1, tmp_path / "run", callback=lambda stage, epoch, m: epochs.append(stage))
    assert list(fold_run.stages) == ["stage0", "toy"] and epochs == ["stage0", "toy"]
    written = json.loads((tmp_path / "run" / "toy" / "toy.json").read_text())
    assert written["backbone_bytes"] == (tmp_path / "run" / "stage0" / BACKBONE_FILE).stat().st_size > 0
    assert fold_run.final.stage == "toy" and fold_run.final.metrics["test_f1_avg"] == 42.0


def test_a_stage_that_does_not_write_what_it_provides_fails_naming_the_file(toy, tmp_path, monkeypatch):
    monkeypatch.setattr(ToyStage, "provides", ("toy.json", "toy-model.pt"))
    cfg = load_run_config("synthetic", None, [*TINY, f"features.cache_dir={tmp_path / 'features'}"])
    with pytest.raises(RuntimeError, match=r"stage toy finished without writing \['toy-model.pt'\]"):
        run_fold(cfg, get_variant("A0"), 1, tmp_path / "run", callback=lambda stage, epoch, m: None)


def test_a_registered_stage_gets_units_keys_names_and_resources(toy):
    base = RunConfig()
    plan = Plan("test")
    final = add_variant_fold(plan, base, get_variant("A0"), 2, "manifest", seed=0)
    stage0, unit = plan.ordered()
    assert (stage0.stage, unit.stage, final.key) == ("stage0", "toy", unit.key)
    assert unit.upstream == {"stage0": stage0.key} and unit.key.startswith("toy-")
    assert plan.cells[("A0", 2, 0)] == unit.key and unit.name().endswith("· stage T")
    wider = dataclasses.replace(base, model=dataclasses.replace(base.model, dim=base.model.dim * 2))
    same_tau = dataclasses.replace(base, stage2=dataclasses.replace(base.stage2, tau=0.5))
    key = lambda cfg: Unit("toy", 2, to_dict(cfg), {"stage0": stage0.key}, "manifest").key
    assert key(wider) != unit.key and key(same_tau) == unit.key  # its key reads model.dim, not stage2
    assert plan_resources({"CPU": 8.0, "GPU": 2.0}, "toy", 0.25, None).gpu == 0.25  # feature-like: a GPU share
    # the live view counts its epochs from its own section
    epochs = dataclasses.replace(base, stage2=dataclasses.replace(base.stage2, epochs=7))
    toy_unit = Unit("toy", 2, to_dict(epochs), {"stage0": stage0.key}, "manifest")
    assert Progress([toy_unit], stream=io.StringIO()).states[toy_unit.key].epochs == 7


def test_search_trials_train_what_the_shared_stage0_sweep_does_not():
    from orchestrator.search import _fold_units, _trial_units

    plan = _fold_units(RunConfig(), 1, seed=0, manifest_hash="manifest")
    assert [u.stage for u in _trial_units(plan, RunConfig(), 1, seed=0, manifest_hash="manifest")] == ["stage1", "stage2"]


def test_a_stage_whose_required_upstream_is_off_is_refused(toy, monkeypatch):
    monkeypatch.setattr(ToyStage, "needs", ("stage1",))
    monkeypatch.setattr(ToyStage, "optional", ())
    with pytest.raises(ValueError, match=r"variant A0: stage toy needs \['stage1'\], which the variant does not train"):
        fold_stages(Variant("A0", stage1=False, id_loss=False, orth=False, contra=False, stage2=False))


def test_units_know_which_stages_of_the_command_read_them():
    plan = Plan("ablate")
    add_variant_fold(plan, RunConfig(), get_variant("A0"), 1, "manifest", seed=0)
    (stage0,) = plan.units.values()
    assert stage0.downstream == []  # A0 alone: nothing reads its features
    add_variant_fold(plan, RunConfig(), get_variant("CL-ILE"), 1, "manifest", seed=0)
    units = {u.stage: u for u in plan.ordered()}
    assert units["stage0"] is stage0 and stage0.downstream == ["stage1", "stage2"]
    assert (units["stage1"].downstream, units["stage2"].downstream) == (["stage2"], [])
    assert Unit.from_json(stage0.to_json()).downstream == ["stage1", "stage2"]  # the trial reads it from the spec


def test_search_marks_its_shared_stage0_units_as_read_by_its_trials():
    from types import SimpleNamespace

    from orchestrator.search import SEARCH_FILE, build_plan

    ctx = SimpleNamespace(args=SimpleNamespace(space_file=str(SEARCH_FILE), folds=[1, 2]), seeds=[0], cfg=RunConfig(),
                          manifest_hash="manifest")
    plan = build_plan(ctx)
    assert [(u.stage, u.downstream) for u in plan.ordered()] == [("stage0", ["stage1", "stage2"])] * 2


def test_a_stage0_unit_builds_the_feature_cache_only_when_the_command_reads_it(tmp_path):
    from clile_core.data.fold_data import data_hash, resolve_manifest
    from clile_core.data.manifest import read_manifest
    from orchestrator.execute import run_unit
    from orchestrator.store import ArtifactStore

    store = ArtifactStore(str(tmp_path / "store"))
    cfg = load_run_config("synthetic", None, TINY)
    manifest_path, images = resolve_manifest(cfg.data)
    digest = data_hash(read_manifest(manifest_path), images, store.features_dir)
    cached = lambda: sorted(p.name for p in store.features_dir.iterdir() if (p / FEATURES_MARKER).exists())
    alone = add_variant_fold(Plan("backbones"), cfg, get_variant("A0"), 1, digest, seed=0)
    run_unit(store, alone, lambda metrics: None)
    assert store.is_complete(alone.key) and cached() == []  # A0's table reads no features
    read = dataclasses.replace(cfg, stage0=dataclasses.replace(cfg.stage0, lr=cfg.stage0.lr / 2))  # another unit
    plan = Plan("ablate")
    add_variant_fold(plan, read, get_variant("CL-ILE"), 1, digest, seed=0)
    stage0 = plan.ordered()[0]
    run_unit(store, stage0, lambda metrics: None)
    assert cached() == get_stage("stage0").cache_keys(read, load_fold_data(read.data, 1, str(store.features_dir)),
                                                      store.unit_dir(stage0.key))
