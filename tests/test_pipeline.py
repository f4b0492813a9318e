"""Stage 0 -> I -> II end to end on a small synthetic set, the feature cache, predict and the CLI."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from clile_core import features as features_module
from clile_core import predict as predict_cli
from clile_core import run as run_cli
from clile_core.config import load_run_config
from clile_core.data.fold_data import load_fold_data
from clile_core.features import FeatureStore, load_or_compute
from clile_core.metrics import f1_per_au
from clile_core.models.backbones import create_backbone
from clile_core.pipeline import run_fold
from clile_core.names import PREDICTIONS_FILE
from clile_core.stages import stage0_features
from clile_core.training.loop import Evaluation, NonFiniteLossError, fit
from clile_core.config import StageConfig
from clile_core.variants import get_variant

REPO = Path(__file__).resolve().parents[1]
# The default synthetic preset (24 subjects × 80 frames, 64 px) with fewer epochs: the smallest set on
# which a from-scratch ResNet-18 reliably learns AUs that transfer to unseen subjects.
SMALL = [
    f"data.synthetic_root={REPO / 'data' / 'synthetic'}", "stage0.epochs=8", "stage1.epochs=4", "stage2.epochs=4",
    "model.dim=64", "model.heads=4", "model.ff_dim=128",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = load_run_config("synthetic", None, [*SMALL, f"features.cache_dir={out / 'features'}"])
    epochs: list[tuple[str, int, dict]] = []
    fold_run = run_fold(cfg, get_variant("CL-ILE"), 1, out, callback=lambda stage, epoch, m: epochs.append((stage, epoch, m)))
    return cfg, out, fold_run, epochs


def features_of(trained) -> FeatureStore:
    """The run's stage-0 features, from the cache its stages I/II filled."""
    cfg, out, fold_run, _ = trained
    return stage0_features(cfg, fold_run.data, out / "stage0")


def test_all_three_stages_write_their_outputs(trained):
    _, out, fold_run, epochs = trained
    assert set(fold_run.stages) == {"stage0", "stage1", "stage2"}
    for stage in ("stage0", "stage1", "stage2"):
        result = json.loads((out / stage / "result.json").read_text())
        assert result["metrics"]["best_epoch"] >= 1 and 0 <= result["metrics"]["test_f1_avg"] <= 100
        assert (out / stage / PREDICTIONS_FILE).exists()
    assert (out / "stage0" / "backbone.pt").exists() and (out / "stage1" / "stage1.pt").exists()
    assert [e for s, e, _ in epochs if s == "stage2"] == [1, 2, 3, 4]
    stage2_terms = epochs[-1][2]
    assert {"train_bce", "train_orth", "train_contra", "train_loss", "val_f1_avg", "val_f1_AU12", "lr"} <= set(stage2_terms)
    assert "train_id" in [m for s, _, m in epochs if s == "stage1"][0]


def test_test_f1_beats_the_all_positive_baseline(trained):
    _, _, fold_run, _ = trained
    labels = fold_run.data.labels[fold_run.data.split.test]
    _, all_positive = f1_per_au(np.ones(labels.shape), labels)
    for stage in ("stage0", "stage2"):
        assert fold_run.stages[stage].metrics["test_f1_avg"] > 100 * all_positive + 2.0, stage


def test_test_subjects_never_in_training_or_validation(trained):
    _, _, fold_run, _ = trained
    split = fold_run.data.split
    assert not set(split.test_subjects) & (set(split.train_subjects) | set(split.val_subjects))
    ile = torch.load(fold_run.stages["stage1"].out_dir / "stage1.pt", weights_only=True)
    assert ile["subjects"] == split.train_subjects and ile["ile"].shape[0] == len(split.train_subjects)


def test_feature_cache_hits_on_second_run_without_running_the_backbone(trained, monkeypatch):
    cfg, out, fold_run, _ = trained
    calls = []
    monkeypatch.setattr("clile_core.features._compute", lambda *a, **k: calls.append(a) or torch.zeros(1))
    again = stage0_features(cfg, fold_run.data, out / "stage0")
    assert again.hit and not calls
    # stages I and II of the run read one entry: computed by the first, found by the second
    assert [p.parent.name for p in (out / "features").glob("*/meta.json")] == [again.key]
    assert set(again.views) == {"centre", "flip"}


def test_feature_cache_key_changes_with_the_backbone_checkpoint(trained, tmp_path):
    cfg, _, fold_run, _ = trained
    other = tmp_path / "other.pt"
    backbone = create_backbone(cfg.model.backbone)
    torch.save(backbone.state_dict(), other)
    fresh = load_or_compute(backbone, other, data=fold_run.data, cfg=cfg, device=torch.device("cpu"))
    assert fresh.key != features_of(trained).key and not fresh.hit


def test_units_missing_the_cache_together_compute_it_once(trained, tmp_path, monkeypatch):
    """Two units of a fold whose stage 0 built no cache: one computes (slowly here), the other waits and loads."""
    cfg, out, fold_run, _ = trained
    cfg = dataclasses.replace(cfg, features=dataclasses.replace(cfg.features, cache_dir=str(tmp_path / "cache")))
    calls, compute = [], features_module._compute

    def slow_compute(*args, **kwargs):
        calls.append(kwargs["view"])
        time.sleep(0.5)  # long enough for the other thread to arrive while this one computes
        return compute(*args, **kwargs)

    monkeypatch.setattr(features_module, "_compute", slow_compute)
    results = []
    load = lambda: results.append(load_or_compute(create_backbone(cfg.model.backbone), out / "stage0" / "backbone.pt",
                                                  data=fold_run.data, cfg=cfg, device=torch.device("cpu")))
    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert calls == ["centre", "flip"]  # every view once, by one of them
    assert sorted(r.hit for r in results) == [False, True] and results[0].key == results[1].key
    torch.testing.assert_close(results[0].views["flip"], results[1].views["flip"])


def test_predict_matches_the_trained_model_on_a_test_image(trained, capsys):
    _, out, fold_run, _ = trained
    data = fold_run.data
    saved = np.load(out / "stage2" / PREDICTIONS_FILE)
    row = int(saved["test_rows"][0])
    image = data.images_root / data.manifest["image"].iloc[row]
    records = predict_cli.predict(out / "stage2", [image])
    probs = np.array(list(records[0]["probabilities"].values()))
    assert list(records[0]["probabilities"]) == data.au_names
    np.testing.assert_allclose(probs, saved["test_probs"][0], atol=0.02)  # cached features are float16
    assert records[0]["active"] == [au for au, p in zip(data.au_names, probs) if p >= 0.5]
    assert predict_cli.main(["--model", str(out / "stage2"), "--json", str(image)]) == 0
    assert json.loads(capsys.readouterr().out)[0]["image"] == str(image)
    assert predict_cli.main(["--model", str(out / "stage0"), str(image)]) == 0
    assert "AU12" in capsys.readouterr().out


def test_predict_refuses_missing_inputs(trained, tmp_path, capsys):
    _, out, _, _ = trained
    assert predict_cli.main(["--model", str(tmp_path), "x.png"]) == 2
    assert "not a saved model" in capsys.readouterr().err
    assert predict_cli.main(["--model", str(out / "stage2"), str(tmp_path / "nope.png")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_fit_fails_with_the_name_of_a_non_finite_loss_term():
    model = torch.nn.Linear(2, 2)
    batches = lambda: [(torch.ones(1, 2),)]
    terms = lambda batch: {"orth": torch.tensor(float("nan")), "loss": model(batch[0]).sum()}
    with pytest.raises(NonFiniteLossError, match="stage2: loss term orth became nan at epoch 1"):
        fit(model, StageConfig(epochs=1), stage="stage2", train_batches=batches, loss_terms=terms, validate=None,
            au_names=["AU1"], threshold=0.5, device=torch.device("cpu"))


def test_fit_scales_the_learning_rate_of_named_parameters():
    def bias_step(scales):
        torch.manual_seed(0)
        model = torch.nn.Linear(2, 1)
        start = model.bias.detach().clone()
        terms = lambda batch: {"loss": model(batch[0]).sum()}
        evaluation = lambda: Evaluation(np.zeros((1, 1)), np.zeros((1, 1)))
        fit(model, StageConfig(epochs=1, lr=0.01, weight_decay=0.0, grad_clip=None), stage="stage1",
            train_batches=lambda: [(torch.ones(1, 2),)], loss_terms=terms, validate=evaluation, au_names=["AU1"],
            threshold=0.5, device=torch.device("cpu"), lr_scales=scales)
        return (model.bias.detach() - start).item()

    assert bias_step({"bias": 20.0}) == pytest.approx(20 * bias_step({}), rel=1e-5)


def test_run_cli_refuses_bad_config_and_missing_images(tmp_path, capsys):
    assert run_cli.main(["--set", "stage2.tau=-1", "--out", str(tmp_path / "a")]) == 2
    assert "stage2.tau" in capsys.readouterr().err
    manifest = tmp_path / "m.csv"
    manifest.write_text("image,subject,session,frame," + ",".join(f"AU{n}" for n in (1, 2, 4, 6, 9, 12, 25, 26)) + "\n"
                        + "".join(f"SN00{i}/0.png,SN00{i},,0,1,0,0,0,0,0,0,0\n" for i in range(1, 10)))
    code = run_cli.main(["--dataset", "disfa", "--set", f"data.manifest={manifest}", "--set", f"data.images={tmp_path}",
                         "--set", "model.weights=none", "--out", str(tmp_path / "run")])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "run" / "stage0" / "result.json").exists()


def test_identity_diagnostics_are_part_of_every_stage_result(trained):
    _, _, fold_run, _ = trained
    stages = {name: result.metrics for name, result in fold_run.stages.items()}
    n_train = len(fold_run.data.split.train_subjects)
    for name in ("stage0", "stage1", "stage2"):
        assert 0 <= stages[name]["id_probe_acc"] <= 100, name
        assert stages[name]["id_probe_chance"] >= 100 / n_train - 1e-9
    # stage II reports the silhouettes of the ILEs it was built on: the same numbers stage I logged
    for key in ("ile_silhouette_subject", "ile_silhouette_au"):
        assert -1 <= stages["stage1"][key] <= 1 and stages["stage2"][key] == stages["stage1"][key]
    assert "ile_silhouette_subject" not in stages["stage0"]


def test_stage1_keeps_its_last_epoch_and_the_others_their_best(trained):
    cfg, _, fold_run, _ = trained
    assert cfg.stage1.select == "last" and cfg.stage2.select == "val_f1"
    s1 = fold_run.stages["stage1"]
    assert s1.metrics["best_epoch"] == cfg.stage1.epochs
    s2 = fold_run.stages["stage2"]
    best = max(s2.history, key=lambda h: h["val_f1_avg"])
    assert s2.metrics["best_epoch"] == best["epoch"]


def test_stage1_without_id_loss_is_eq3_without_its_id_term(trained, tmp_path):
    import dataclasses

    from clile_core.training.stage1 import train_stage1

    cfg, _, fold_run, _ = trained
    a2 = get_variant("A2").apply(cfg)
    a2 = dataclasses.replace(a2, stage1=dataclasses.replace(a2.stage1, epochs=1))
    result = train_stage1(a2, fold_run.data, features_of(trained), tmp_path)
    epoch = result.history[0]
    assert "train_id" not in epoch
    assert epoch["train_loss"] == pytest.approx(a2.stage1.lam * epoch["train_bce"], rel=1e-5)


def test_no_held_out_frames_means_no_seen_metrics_and_no_probe(trained, tmp_path):
    """The real-data presets' protocol (data.seen_fraction 0): every training frame trains."""
    import dataclasses

    from clile_core.training.stage2 import train_stage2

    cfg, out, fold_run, _ = trained
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, seen_fraction=0.0),
                              stage2=dataclasses.replace(cfg.stage2, epochs=1))
    data = load_fold_data(cfg.data, 1, cfg.features.cache_dir)
    assert len(data.split.seen) == 0 and len(data.split.train) > len(fold_run.data.split.train)
    result = train_stage2(cfg, data, features_of(trained), tmp_path, backbone_ckpt=out / "stage0" / "backbone.pt",
                          stage1_dir=out / "stage1")
    assert "test_f1_avg" in result.metrics and not any(k.startswith(("seen_", "id_probe")) for k in result.metrics)
    assert set(np.load(tmp_path / PREDICTIONS_FILE).files) == {"test_probs", "test_labels", "test_rows"}


def test_the_same_unit_twice_gives_identical_metrics(trained, tmp_path):
    """Same machine, same config, same seed: bit-identical results (what makes cached units trustworthy)."""
    import dataclasses

    from clile_core.training.stage0 import train_stage0
    from clile_core.training.stage1 import train_stage1

    cfg, _, fold_run, _ = trained
    cfg = dataclasses.replace(cfg, stage0=dataclasses.replace(cfg.stage0, epochs=1))
    first, second = (train_stage0(cfg, fold_run.data, tmp_path / f"s0_{k}") for k in "ab")
    assert first.metrics == second.metrics and first.history[0]["train_loss"] == second.history[0]["train_loss"]
    # the weights, not the file bytes: torch.save names its archive after the (random) temporary file
    weights = [torch.load(tmp_path / d / "backbone.pt", weights_only=True) for d in ("s0_a", "s0_b")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    features = features_of(trained)
    one, two = (train_stage1(cfg, fold_run.data, features, tmp_path / f"s1_{k}") for k in "ab")
    assert one.metrics == two.metrics
