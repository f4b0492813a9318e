import dataclasses
import hashlib

import pytest

from clile_core.config import ConfigError, RunConfig, flatten, load_run_config, merge, parse_overrides, to_dict
from clile_core.variants import get_variant, load_variants
from orchestrator.backbones import load_backbones
from orchestrator.search_space import load_search_space
from orchestrator.units import Plan, add_variant_fold


def test_bp4d_preset_has_paper_hyperparameters():
    cfg = load_run_config("bp4d")
    assert (cfg.stage0.lr, cfg.stage0.epochs, cfg.stage1.lr, cfg.stage1.epochs) == (1e-4, 300, 1e-5, 20)
    assert (cfg.stage2.lambda1, cfg.stage2.lambda2, cfg.stage2.lambda3, cfg.stage2.tau) == (1.0, 0.5, 0.4, 2.0)
    assert (cfg.stage1.lam, cfg.model.dim, cfg.stage0.batch_size, cfg.threshold) == (0.4, 512, 64, 0.5)
    assert load_run_config("disfa").stage2.lr == 5e-5 and load_run_config("disfa").stage2.epochs == 150


@pytest.mark.parametrize("dataset", ["bp4d", "disfa"])
def test_real_data_presets_follow_the_paper_protocol(dataset):
    cfg = load_run_config(dataset)
    assert cfg.data.seen_fraction == 0.0  # every training frame trains, as in the paper
    assert cfg.features.random_crops >= 2  # random crops besides centre and flip
    assert load_run_config("synthetic").data.seen_fraction > 0  # the diagnostics stay on for the benchmark


def test_layers_config_file_then_overrides(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("stage2: {tau: 0.5, epochs: 3}\nmodel: {pooling: cls}\n")
    cfg = load_run_config("synthetic", str(path), ["stage2.tau=1.5", "model.weights=none"])
    assert (cfg.stage2.tau, cfg.stage2.epochs, cfg.model.pooling) == (1.5, 3, "cls")
    assert cfg.data.input_size == 64  # from the synthetic preset


def test_unknown_key_names_file_key_and_allowed(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("stage2: {temperature: 1.0}\n")
    with pytest.raises(ConfigError) as err:
        load_run_config("synthetic", str(path))
    message = str(err.value)
    assert str(path) in message and "stage2.temperature" in message and "tau" in message


@pytest.mark.parametrize(
    "override, fragment",
    [("stage2.tau=0", "out of range"), ("model.pooling=max", "choose one of"), ("stage1.epochs=abc", "expected int"),
     ("loss_weighting=focal", "selective"), ("seed", "key=value"), ("stage2.select=best", "choose one of"),
     ("stage1.select=first", "choose one of")],
)
def test_bad_overrides_refused(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_run_config("synthetic", None, [override])


def test_unknown_dataset_refused():
    with pytest.raises(ConfigError, match="choose one of"):
        load_run_config("ck+")


def test_merge_accepts_int_for_float_and_flatten_lists_every_value():
    cfg = merge(RunConfig(), parse_overrides(["stage2.tau=2", "stage0.grad_clip=null"]), "--set")
    assert isinstance(cfg.stage2.tau, float) and cfg.stage0.grad_clip is None
    flat = flatten(cfg)
    assert flat["stage2.tau"] == 2.0 and flat["data.dataset"] == "synthetic" and "model.backbone" in flat


def test_variants_table_matches_paper():
    variants = load_variants()
    assert list(variants) == ["A0", "A1", "A2", "A3", "A4", "CL-ILE"]
    marks = {n: (v.stage1, v.id_loss, v.orth, v.contra) for n, v in variants.items()}
    assert marks["A1"] == (False, False, False, True)
    assert marks["A3"] == (True, False, True, True)
    assert marks["CL-ILE"] == (True, True, True, True)
    assert not variants["A0"].stage2


def test_variant_apply_sets_switches():
    cfg = get_variant("A1").apply(RunConfig())
    assert not cfg.stage2.use_orth and cfg.stage2.use_contra and cfg.stage2.au_init == "random"
    assert not cfg.stage2.init_from_stage1
    cfg = get_variant("A2").apply(RunConfig())
    assert not cfg.stage1.use_id_loss and cfg.stage2.use_orth and not cfg.stage2.use_contra


@pytest.mark.parametrize(
    "body, fragment",
    [("variants: {X: {stage1: false, id_loss: false, orth: true, contra: false}}",
      "variants.X.orth=true need stage I's model, but variants.X.stage1=false"),
     ("variants: {X: {stage1: true, id_loss: true, orth: true, contra: true, colour: red}}", "unknown key"),
     ("variants: {X: {stage1: yes please, id_loss: true, orth: true, contra: true}}", "true or false"),
     ("variants: {X: {stage1: true}}", "missing key"), ("stages: []", "top-level key"),
     ("variants: {X: {name: Y, stage1: true, id_loss: true, orth: true, contra: true}}",
      "variant(s) ['X'] set name:, but a variant is named by its key; remove the name: key")],
)
def test_bad_variant_files_refused(tmp_path, body, fragment):
    path = tmp_path / "variants.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_variants(path)
    assert fragment in str(err.value) and str(path) in str(err.value)


# Digests of every unit key of a plan (6 variants × 3 folds × seeds 0, 1, plus two backbones' stage 0) as the
# hand-written dataclass validators of 26fd249 computed them: a change of config library must not move a key,
# or every stored unit would silently be trained again.
@pytest.mark.parametrize("dataset, digest", [("synthetic", "f5bee0eef763dc42"), ("bp4d", "979d7dd0ba3fb207"),
                                             ("disfa", "843ca6841f775c80")])
def test_unit_keys_of_the_presets_are_unchanged(dataset, digest):
    cfg = load_run_config(dataset)
    plan = Plan("ablate")
    for variant in load_variants().values():
        for fold in (1, 2, 3):
            for seed in (0, 1):
                add_variant_fold(plan, cfg, variant, fold, "manifest-hash", seed=seed)
    for name in ("resnet50", "swin_t"):
        other = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backbone=name))
        add_variant_fold(plan, other, get_variant("A0"), 1, "manifest-hash", seed=0, row=name)
    assert len(plan.units) == 50
    assert hashlib.sha256("\n".join(sorted(plan.units)).encode()).hexdigest()[:16] == digest


def test_runtime_objects_replace_revalidate_and_round_trip():
    cfg = load_run_config("synthetic")
    assert merge(RunConfig(), to_dict(cfg), "unit") == cfg  # a unit's stored dict gives back the same config
    assert dataclasses.replace(cfg, seed=3).seed == 3 and dataclasses.replace(cfg, seed=3).stage1 == cfg.stage1
    with pytest.raises(ValueError, match="dim=128 is not divisible by heads=3"):
        dataclasses.replace(cfg.model, heads=3)  # a section is checked however it is built


@pytest.mark.parametrize("file_text, sets", [
    ("stage1:\n  lr: 1e-4\n", []),  # YAML 1.1 reads 1e-4 (no dot) as a string
    ("", ["stage1.lr=1e-4"]),
    ("stage1: {lr: 0.0001}\n", []),
])
def test_exponent_strings_are_floats(tmp_path, file_text, sets):
    path = tmp_path / "c.yaml"
    path.write_text(file_text)
    lr = load_run_config("synthetic", str(path), sets).stage1.lr
    assert isinstance(lr, float) and lr == pytest.approx(1e-4)


@pytest.mark.parametrize("override, message", [
    ("stage0.epochs='3'", "--set: key 'stage0.epochs': expected int, got '3'"),  # a quoted number stays text
    ("deterministic=1", "--set: key 'deterministic': expected true or false, got 1"),
    ("stage0.lr=true", "--set: key 'stage0.lr': expected float, got True"),
    ("stage0.batch_size=2.0", "--set: key 'stage0.batch_size': expected int, got 2.0"),
    ("stage0.lr=.nan", "--set: key 'stage0.lr': expected a finite number, got nan"),
    ("seed=null", "--set: key 'seed': null is not allowed here"),
    ("data.num_workers=1.5", "--set: key 'data.num_workers': expected int or 'auto', got 1.5"),
    ("data.num_workers=65", "--set: key 'data.num_workers': 65 is out of range; allowed [0, 64]"),
    ("stage1.lam=1.5", "--set: key 'stage1.lam': 1.5 is out of range; allowed [0.0, 1.0]"),
    ("stage0.epochs=0", "--set: key 'stage0.epochs': 0 is out of range; allowed [1, 100000]"),  # bound kept by subclass
    ("model=3", "--set: model must be a mapping of keys to values, got 3"),
    ("colour=red", "--set: unknown top-level key 'colour'; allowed keys: ['data', 'deterministic', 'device'"),
])
def test_set_messages_name_source_key_and_what_is_allowed(override, message):
    with pytest.raises(ConfigError) as err:
        load_run_config("synthetic", None, [override])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_cross_field_checks_see_the_final_layers(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model: {dim: 30}\n")
    # the file alone breaks dim % heads (the preset has 4 heads); --set repairs it: the merged values count
    assert load_run_config("synthetic", str(path), ["model.heads=5"]).model.heads == 5
    with pytest.raises(ConfigError) as err:
        load_run_config("synthetic", str(path))
    # the refusal names every layer that set a model key, in order, and the heads that would fit
    assert "synthetic.yaml + " + str(path) + ": model.dim=30 is not divisible by model.heads=4" in str(err.value)
    assert "heads that fit: [1, 2, 3, 5, 6, 10, 15, 30]" in str(err.value)
    # a bad key names the layer that set it, not the others
    path.write_text("model: {dim: 4}\n")
    with pytest.raises(ConfigError) as err:
        load_run_config("synthetic", str(path), ["stage0.epochs=2"])
    assert str(err.value) == f"{path}: key 'model.dim': 4 is out of range; allowed [8, 8192]"


@pytest.mark.parametrize("loader, body, message", [
    (load_variants, "variants: {X: {stage1: true, id_loss: false, orth: false, contra: true, stage2: false}}",
     "variants.X.stage2=false means stage 0 alone, but variants.X.stage1=true and variants.X.contra=true"),
    (load_search_space, "space: {stage2.temperature: {type: uniform, low: 0, high: 1}}",
     "key 'space.stage2.temperature': 'stage2.temperature' is not allowed; choose one of ['stage1.lam', "),
    (load_search_space, "space: {stage2.tau: {type: uniform, low: 2, high: 1e-1}}",
     "needs low < high, got space.stage2.tau.low=2.0 and space.stage2.tau.high=0.1"),
    (load_search_space, "space: {stage2.tau: {type: normal, low: 0, high: 1}}",
     "key 'space.stage2.tau.type': 'normal' is not allowed; choose one of ['uniform', 'loguniform']"),
    (load_search_space, "asha: {reduction_factor: 1}\nspace: {stage2.tau: {type: uniform, low: 0, high: 1}}",
     "key 'asha.reduction_factor': 1 is out of range; allowed >= 2"),
    (load_search_space, "space: {}", "key 'space': needs at least 1 item(s), got {}"),
    (load_backbones, "backbones: [resnet18, vgg16]",
     "key 'backbones[1]': 'vgg16' is not allowed; choose one of ['resnet18', "),
    (load_backbones, "backbones: [resnet18]\ndefault_folds: {bp4d: [1, 4]}",
     "key 'default_folds.bp4d[1]': 4 is not allowed; choose one of [1, 2, 3]"),
    (load_backbones, "backbones: [resnet18]\ndefault_folds: {ck: [1]}",
     "key 'default_folds.ck': 'ck' is not allowed; choose one of ['bp4d', 'disfa', 'synthetic']"),
    (load_backbones, "models: [resnet18]", "unknown top-level key 'models'; allowed keys: ['backbones', 'default_folds']"),
    (load_backbones, "- resnet18", "the top level: expected a mapping, got ['resnet18']"),
])
def test_each_file_kind_names_file_key_and_what_is_allowed(tmp_path, loader, body, message):
    path = tmp_path / "file.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError) as err:
        loader(path)
    assert str(err.value).startswith(f"{path}: {message}") and "\n" not in str(err.value)


def test_shipped_files_load():
    space = load_search_space()
    assert (space.num_samples, space.grace_period, space.reduction_factor) == (8, 1, 2)
    assert space.space["lr_scale"].type == "loguniform" and space.space["stage2.tau"].high == 4.0
    backbones = load_backbones()
    assert backbones.backbones[0] == "resnet18" and backbones.default_folds["synthetic"] == [1]
