"""The dataset registry: built-in specs, refusals, and a new dataset added in exactly two files."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from clile_core import datasets
from clile_core.config import ConfigError, load_run_config
from clile_core.data.fold_data import resolve_manifest
from clile_core.datasets import AU_SET_NAMES, DATASET_NAMES, IMPORTABLE_NAMES, DatasetSpec, au_numbers, get_dataset
from orchestrator.cli import common_parser
from reports import published

REPO = Path(__file__).resolve().parents[1]


def test_builtin_specs_drive_choices_au_sets_and_importers():
    assert list(DATASET_NAMES) == ["bp4d", "disfa", "synthetic"]
    assert list(AU_SET_NAMES) == ["bp4d", "disfa"] and list(IMPORTABLE_NAMES) == ["bp4d", "disfa"]
    assert au_numbers("disfa") == (1, 2, 4, 6, 9, 12, 25, 26) and len(au_numbers("bp4d")) == 12
    with pytest.raises(ValueError, match="no AU list of its own"):
        au_numbers("synthetic")
    with pytest.raises(ValueError, match=r"unknown dataset 'ck\+'; known: \['bp4d', 'disfa', 'synthetic'\]"):
        get_dataset("ck+")
    assert [len(part) for part in get_dataset("bp4d").folds] == [14, 14, 13]
    assert get_dataset("synthetic").folds is None and get_dataset("synthetic").make_data is not None
    assert get_dataset("bp4d").preset.read_text().count("dataset: bp4d") == 1


def test_cli_and_config_refuse_unregistered_names(capsys):
    with pytest.raises(SystemExit):
        common_parser("prog", "", "exp").parse_args(["--dataset", "ck"])
    err = capsys.readouterr().err
    assert "[--dataset {bp4d,disfa,synthetic}]" in err and "invalid choice: 'ck'" in err
    with pytest.raises(ConfigError, match=r"data.au_set'.*'synthetic' is not allowed; choose one of \['bp4d', 'disfa'\]"):
        load_run_config("synthetic", None, ["data.au_set=synthetic"])


@pytest.mark.parametrize("change, message", [
    (dict(name="Lab-1"), "lower-case letters"),
    (dict(name="bp4d"), "registered twice"),
    (dict(aus=(1, 1)), "distinct AU numbers"),
    (dict(folds=(("a",), ("b",))), "3 non-empty subject lists"),
    (dict(folds=(("a",), ("b", "a"), ("c",))), "no subject in two"),
])
def test_register_refuses_bad_specs(change, message):
    spec = dataclasses.replace(DatasetSpec(name="lab", description="a lab's set", aus=(1, 2)), **change)
    with pytest.raises(ValueError, match=message):
        datasets.register_dataset(spec)
    assert list(DATASET_NAMES) == ["bp4d", "disfa", "synthetic"]


def test_published_rows_and_manifest_come_from_the_spec(monkeypatch):
    monkeypatch.setitem(datasets._REGISTRY, "lab", DatasetSpec(name="lab", description="no paper rows", aus=(1, 2)))
    assert published.comparison("lab", ["AU1", "AU2"]) is None
    assert published.comparison("disfa", [f"AU{n}" for n in au_numbers("disfa")]).source == "DISFA (paper Table 2)"
    with pytest.raises(ValueError, match="dataset lab needs data.manifest and data.images"):
        resolve_manifest(load_run_config("synthetic", None, ["data.dataset=lab"]).data)


# --- a new dataset in exactly two files, on sys.path beside (not inside) this checkout

TOY_MODULE = '''
"""A lab's own set: per-subject CSVs 'frame,AU1,AU2,AU12' under labels/, images {subject}/{frame}.png."""

import pandas as pd

from clile_core.data.labels_io import frame_table, labels_dir
from clile_core.datasets import DatasetSpec, register_dataset


def read_labels(root, image_pattern="{subject}/{frame}.png"):
    tables = []
    for path in sorted(labels_dir(root, "labels", "toy").glob("*.csv")):
        table = pd.read_csv(path)
        table.insert(0, "session", "")
        table.insert(0, "subject", path.stem)
        tables.append(table)
    return frame_table(tables, "toy", image_pattern)


register_dataset(DatasetSpec(
    name="toy", description="six subjects, three AUs", aus=(1, 2, 12), label_rule="0/1 as written",
    folds=(("A", "B"), ("C", "D"), ("E", "F")), importer=read_labels,
))
'''
TOY_PRESET = """
data: {dataset: toy, au_set: toy, input_size: 32, val_fraction: 0.25, seen_fraction: 0.0}
model: {backbone: resnet18, weights: none, dim: 32, heads: 4, ff_dim: 64}
stage0: {epochs: 1, batch_size: 8}
stage1: {epochs: 1, batch_size: 8}
stage2: {epochs: 1, batch_size: 8}
"""
# Run in a fresh interpreter with the plugin folder on sys.path: config loading, the importer through
# `prepare`, fold splitting and the CLI choices, reported as JSON.
TOY_CHECKS = """
import json, sys
from clile_core.config import load_run_config
from clile_core.data import prepare
from clile_core.data.folds import split_fold
from clile_core.data.manifest import read_manifest
from clile_core.run import build_parser

labels, images, manifest = sys.argv[1:]
cfg = load_run_config("toy")
code = prepare.main(["toy", "--labels", labels, "--images", images, "--out", manifest])
frame = read_manifest(manifest)
split = split_fold(frame, "toy", 1, val_fraction=cfg.data.val_fraction, seen_fraction=cfg.data.seen_fraction,
                   seed=cfg.data.split_seed)
print(json.dumps({"prepare": code, "preset_dim": cfg.model.dim, "au_set": cfg.data.au_set,
                  "columns": list(frame.columns), "test": split.test_subjects, "val": split.val_subjects,
                  "train": split.train_subjects, "help": build_parser().format_help()}))
"""


def _write_toy_release(root: Path) -> tuple[Path, Path]:
    labels, images = root / "release", root / "images"
    (labels / "labels").mkdir(parents=True)
    for s, subject in enumerate("ABCDEF"):
        rows = [f"{f},{(f + s) % 2},{f % 2},{int(f == s % 4)}" for f in range(4)]
        (labels / "labels" / f"{subject}.csv").write_text("frame,AU1,AU2,AU12\n" + "\n".join(rows) + "\n")
        (images / subject).mkdir(parents=True)
        for f in range(4):
            Image.new("RGB", (40, 40), (40 * s, 30 * f, 90)).save(images / subject / f"{f}.png")
    return labels, images


def test_new_dataset_in_two_files_reaches_config_folds_and_ablate_dry_run(tmp_path):
    plugins = tmp_path / "plugins"
    module = plugins / "clile_core" / "datasets" / "toy.py"
    preset = plugins / "search_spaces" / "datasets" / "toy.yaml"
    for path, text in ((module, TOY_MODULE), (preset, TOY_PRESET)):
        path.parent.mkdir(parents=True)
        path.write_text(textwrap.dedent(text))
    assert sorted(p.relative_to(plugins).as_posix() for p in plugins.rglob("*") if p.is_file()) == [
        "clile_core/datasets/toy.py", "search_spaces/datasets/toy.yaml"]
    labels, images = _write_toy_release(tmp_path)
    manifest = tmp_path / "toy.csv"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugins), str(REPO), os.environ.get("PYTHONPATH", "")])}
    work = tmp_path / "work"
    work.mkdir()

    checks = subprocess.run([sys.executable, "-c", TOY_CHECKS, str(labels), str(images), str(manifest)],
                            cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert checks.returncode == 0, checks.stderr
    seen = json.loads(checks.stdout)
    assert seen["prepare"] == 0 and seen["preset_dim"] == 32 and seen["au_set"] == "toy"
    assert seen["columns"] == ["image", "subject", "session", "frame", "AU1", "AU2", "AU12"]
    assert seen["test"] == ["E", "F"] and len(seen["val"]) == 1 and len(seen["train"]) == 3
    assert "{bp4d,disfa,synthetic,toy}" in seen["help"]

    dry = subprocess.run([sys.executable, "-m", "orchestrator.ablate", "--dataset", "toy", "--manifest", str(manifest),
                          "--images", str(images), "--folds", "1", "--variants", "A0", "CL-ILE", "--dry-run",
                          "--store", str(tmp_path / "store")],
                         cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert dry.returncode == 0, dry.stderr
    assert "0 cached" in dry.stdout and "CL-ILE · fold 1 · seed 0 · resnet18" in dry.stdout
