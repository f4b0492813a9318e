import pytest

from clile_core.config import ConfigError, RunConfig, flatten, load_run_config, merge, parse_overrides
from clile_core.variants import get_variant, load_variants


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
    [("variants: {X: {stage1: false, id_loss: false, orth: true, contra: false}}", "need stage1"),
     ("variants: {X: {stage1: true, id_loss: true, orth: true, contra: true, colour: red}}", "unknown key"),
     ("variants: {X: {stage1: yes please, id_loss: true, orth: true, contra: true}}", "true or false"),
     ("variants: {X: {stage1: true}}", "missing key"), ("stages: []", "top-level key")],
)
def test_bad_variant_files_refused(tmp_path, body, fragment):
    path = tmp_path / "variants.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=fragment) as err:
        load_variants(path)
    assert str(path) in str(err.value)
