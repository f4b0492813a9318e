"""Mistakes a new user makes, each answered by one message and exit 2 before anything trains, and the
data-loss and path-escape cases refused outright."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image
from sweep_helpers import command, completed_units, free_port, main_table, run, runs, unit_runs
from test_importers import write_bp4d

from clile_core import predict as predict_cli
from clile_core.config import ConfigError, load_run_config, merge, parse_overrides, RunConfig
from clile_core.data import prepare, synthetic
from clile_core.data.folds import split_fold
from clile_core.data.images import read_image
from clile_core.data.manifest import ManifestError, au_names, validate
from clile_core.model_io import load_model, save_model
from clile_core.names import MODEL_JSON
from clile_core.models.backbones import create_backbone
from clile_core.models.encoder import Stage0Model
from orchestrator import ablate, search

REPO = Path(__file__).resolve().parents[1]
TINY_SETS = [f"data.synthetic_root={REPO / 'data' / 'synthetic'}", "data.synthetic_subjects=6",
             "data.synthetic_frames=12", "data.synthetic_size=40", "data.input_size=32"]
TINY = [arg for pair in TINY_SETS for arg in ("--set", pair)]



def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


# ---- synthetic generator: never overwrite a folder it did not make --------------------------------


def test_synthetic_refuses_a_foreign_non_empty_folder_and_keeps_its_files(tmp_path, capsys):
    out = tmp_path / "mine"
    (out / "images").mkdir(parents=True)
    (out / "images" / "holiday.png").write_bytes(b"precious")
    (out / "manifest.csv").write_text("my,own,manifest\n")
    assert synthetic.main(["--out", str(out), "--subjects", "3", "--frames-per-subject", "2", "--size", "32"]) == 2
    message = _one_error(capsys)
    assert str(out) in message and "--force" in message and "images" in message
    assert (out / "images" / "holiday.png").read_bytes() == b"precious"
    assert (out / "manifest.csv").read_text() == "my,own,manifest\n"


def test_synthetic_force_overwrites_and_its_own_folder_is_regenerated(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("x")
    args = ["--out", str(out), "--subjects", "3", "--frames-per-subject", "2", "--size", "32"]
    assert synthetic.main([*args, "--force"]) == 0
    assert len(pd.read_csv(out / "manifest.csv")) == 6
    # the generator's own folder (marker present) is regenerated with new params without --force
    assert synthetic.main([*args[:-1], "40"]) == 0
    with Image.open(next((out / "images").rglob("*.png"))) as img:
        assert img.size == (40, 40)


# ---- configuration ---------------------------------------------------------------------------------


def test_exponent_numbers_are_floats_from_set_and_yaml(tmp_path):
    cfg = load_run_config("synthetic", None, ["stage0.lr=1e-3", "stage2.tau=2"])
    assert cfg.stage0.lr == pytest.approx(0.001) and isinstance(cfg.stage2.tau, float)
    config = tmp_path / "c.yaml"
    config.write_text("stage1:\n  lr: 1e-4\n")  # YAML 1.1 reads this as the string '1e-4'
    assert load_run_config("synthetic", str(config)).stage1.lr == pytest.approx(1e-4)
    with pytest.raises(ConfigError, match=r"key 'stage0.lr': expected float, got 'fast'"):
        load_run_config("synthetic", None, ["stage0.lr=fast"])
    with pytest.raises(ConfigError, match="out of range"):
        load_run_config("synthetic", None, ["stage0.lr=1e3"])
    # a string field keeps its text even when it looks like a number
    assert merge(RunConfig(), parse_overrides(["model.weights=1e-3"]), "--set").model.weights == "1e-3"


@pytest.mark.parametrize("sets, fragment", [
    (["model.dim=30", "model.heads=4"], "model.dim=30 is not divisible by model.heads=4"),
    (["data.input_size=64", "data.resize_size=48"], "data.resize_size=48 is smaller than data.input_size=64"),
])
def test_cross_field_checks_refuse_at_load(sets, fragment):
    with pytest.raises(ConfigError) as info:
        load_run_config("synthetic", None, sets)
    assert fragment in str(info.value) and "--set" in str(info.value)


def test_seen_fraction_zero_is_valid():
    assert load_run_config("synthetic", None, ["data.seen_fraction=0"]).data.seen_fraction == 0.0


@pytest.mark.parametrize("sets, fragment", [
    (["model.dim=30", "model.heads=4"], "not divisible"),
    (["data.val_fraction=0.9"], "training subjects leave none"),
])
def test_sweep_refuses_bad_config_and_split_before_training(tmp_path, monkeypatch, capsys, sets, fragment):
    monkeypatch.chdir(tmp_path)
    assert ablate.main([*TINY, *(a for s in sets for a in ("--set", s))]) == 2
    assert fragment in _one_error(capsys)
    assert not (tmp_path / "clile_store" / "units").exists() or not any((tmp_path / "clile_store" / "units").iterdir())


@pytest.mark.parametrize("main, flag, value", [
    (ablate.main, "--retries", "-1"), (ablate.main, "--max-concurrent", "0"),
    (ablate.main, "--gpus-per-trial", "-0.5"), (search.main, "--num-samples", "0"), (ablate.main, "--retries", "x"),
])
def test_argument_ranges_are_checked_at_parsing(capsys, main, flag, value):
    with pytest.raises(SystemExit) as info:
        main([flag, value])
    assert info.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err


# ---- the world outside: cluster, tracking store, artifact store --------------------------------------


@pytest.mark.parametrize("flags, fragment", [
    (lambda tmp: ["--address", f"127.0.0.1:{free_port()}"], "no Ray cluster answers there"),
    (lambda tmp: ["--address", "nonsense"], "expected HOST:PORT"),
    (lambda tmp: ["--tracking-uri", "sqlite:////proc/clile/x.db"], "does not exist"),
    (lambda tmp: ["--tracking-uri", "sqlite:////proc/x.db"], "cannot write the database /proc/x.db"),
    (lambda tmp: ["--store", "/proc/clile_store"], "--store /proc/clile_store: cannot create it"),
])
def test_unusable_cluster_tracking_or_store_fails_before_anything_starts(tmp_path, monkeypatch, capsys, flags, fragment):
    monkeypatch.chdir(tmp_path)
    assert ablate.main([*TINY, *flags(tmp_path)]) == 2  # in-process: Ray never started, MLflow never opened
    assert fragment in _one_error(capsys)
    assert not (tmp_path / "mlflow.db").exists() or (tmp_path / "mlflow.db").stat().st_size == 0


def test_read_only_store_is_refused(tmp_path, monkeypatch, capsys):
    store = tmp_path / "ro"
    (store / "units").mkdir(parents=True)
    (store / "specs").mkdir()
    store.chmod(0o555)
    (store / "units").chmod(0o555)
    try:
        probe = store / "units" / "probe"
        try:
            probe.write_text("x")
            probe.unlink()
            pytest.skip("running as root: permissions do not make a folder read-only")
        except PermissionError:
            pass
        monkeypatch.chdir(tmp_path)
        assert ablate.main([*TINY, "--store", str(store)]) == 2
        assert "cannot write there" in _one_error(capsys)
    finally:
        (store / "units").chmod(0o755)
        store.chmod(0o755)


def test_local_ray_listens_on_loopback_only():
    script = ("from orchestrator.resources import init_ray\nimport ray\ninit_ray(None)\n"
              "print(sorted({n['NodeManagerAddress'] for n in ray.nodes()}))\nray.shutdown()\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**__import__("os").environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "['127.0.0.1']"


# ---- subjects outside the fold lists -----------------------------------------------------------------


def _manifest(subjects: list[str]) -> pd.DataFrame:
    rows = [{"image": f"{s}/T1/{f}.jpg", "subject": s, "session": "T1", "frame": f, **{au: 0 for au in au_names("bp4d")}}
            for s in subjects for f in range(2)]
    return pd.DataFrame(rows)


def test_fold_split_refuses_a_bp4d_subject_in_no_fold():
    listed = "F001 M007 F018 M011 F003 M010 F007 F015 F006".split()
    split_fold(_manifest(listed), "bp4d", 1)  # all listed: fine
    with pytest.raises(ValueError, match=r"\['F099'\] are in no fold of the bp4d 3-fold protocol.*--drop-unlisted"):
        split_fold(_manifest([*listed, "F099"]), "bp4d", 1)


def test_prepare_refuses_unlisted_subject_then_drops_it_on_request(tmp_path, capsys):
    labels, images = tmp_path / "BP4D", tmp_path / "images"
    for subject in ("F001", "F099"):
        write_bp4d(labels, subject, "T1", [1, 2])
        for frame in (1, 2):
            (images / subject / "T1").mkdir(parents=True, exist_ok=True)
            (images / subject / "T1" / f"{frame}.jpg").write_bytes(b"")
    args = ["bp4d", "--labels", str(labels), "--images", str(images), "--out", str(tmp_path / "m.csv")]
    assert prepare.main(args) == 2
    message = _one_error(capsys)
    assert "['F099']" in message and "--drop-unlisted" in message and not (tmp_path / "m.csv").exists()
    assert prepare.main([*args, "--drop-unlisted"]) == 0
    assert set(pd.read_csv(tmp_path / "m.csv")["subject"]) == {"F001"}


# ---- paths read from files stay inside their root ----------------------------------------------------


@pytest.mark.parametrize("image", ["../outside.png", "/etc/passwd", "a/../../b.png", "C:/x.png"])
def test_manifest_image_paths_must_stay_inside_the_images_root(image):
    df = _manifest(["F001"])
    df.loc[1, "image"] = image
    with pytest.raises(ManifestError, match=r"row 3 column image: path .* leaves its root"):
        validate(df, "m.csv")


def test_prepare_refuses_an_image_pattern_leaving_the_root(tmp_path, capsys):
    labels = tmp_path / "BP4D"
    write_bp4d(labels, "F001", "T1", [1])
    (tmp_path / "images").mkdir()
    assert prepare.main(["bp4d", "--labels", str(labels), "--images", str(tmp_path / "images"), "--out",
                         str(tmp_path / "m.csv"), "--image-pattern", "../{subject}/{frame}.jpg"]) == 2
    assert "leaves its root" in _one_error(capsys)


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A genuine (untrained) stage-0 model: stage0/ with its backbone, loadable by predict."""
    out = tmp_path / "run" / "stage0"
    out.mkdir(parents=True)
    backbone = create_backbone("resnet18", "none")
    torch.save(backbone.state_dict(), out / "backbone.pt")
    from clile_core.config import DataConfig, ModelConfig

    save_model(out, kind="stage0", weights={"head": Stage0Model(backbone, 12).head.state_dict()},
               backbone_ckpt=out / "backbone.pt", model_cfg=ModelConfig(), data_cfg=DataConfig(input_size=32),
               au_names=au_names("bp4d"), threshold=0.5)
    return out


def _edit_meta(model_dir: Path, **changes) -> None:
    meta = json.loads((model_dir / MODEL_JSON).read_text())
    for key, value in changes.items():
        if value is None:
            del meta[key]
        else:
            meta[key] = value
    (model_dir / MODEL_JSON).write_text(json.dumps(meta))


def test_model_checkpoint_may_point_to_a_sibling_but_not_outside(model_dir, tmp_path):
    sibling = model_dir.parent / "other"
    sibling.mkdir()
    (model_dir / "backbone.pt").rename(sibling / "backbone.pt")
    _edit_meta(model_dir, backbone_checkpoint="../other/backbone.pt")
    assert load_model(model_dir).kind == "stage0"
    for escape in ("../../backbone.pt", str(sibling / "backbone.pt")):
        _edit_meta(model_dir, backbone_checkpoint=escape)
        with pytest.raises(ValueError, match="backbone_checkpoint: path .* leaves its root"):
            load_model(model_dir)


@pytest.mark.parametrize("make, fragment", [
    (lambda d: _edit_meta(d, threshold=None), "lacks key(s) ['threshold']"),
    (lambda d: (d / MODEL_JSON).write_text("{"), "is not valid JSON"),
    (lambda d: _edit_meta(d, input_size=-4), "model.json: key 'input_size': -4 is out of range; allowed [16, 1024]"),
])
def test_predict_on_a_damaged_model_json_is_one_message(model_dir, tmp_path, capsys, make, fragment):
    make(model_dir)
    image = tmp_path / "face.png"
    Image.new("RGB", (40, 40)).save(image)
    assert predict_cli.main(["--model", str(model_dir), str(image)]) == 2
    assert fragment in _one_error(capsys)


def test_predict_on_a_non_image_or_a_folder_is_one_message(model_dir, tmp_path, capsys):
    good = tmp_path / "face.png"
    Image.new("RGB", (40, 40)).save(good)
    assert predict_cli.main(["--model", str(model_dir), "--json", str(good)]) == 0
    capsys.readouterr()
    (tmp_path / "notes.png").write_text("not an image")
    for bad, fragment in ((tmp_path / "notes.png", "cannot be read as an image"), (tmp_path, "is not a file")):
        assert predict_cli.main(["--model", str(model_dir), str(good), str(bad)]) == 2
        message = _one_error(capsys)
        assert str(bad) in message and fragment in message


def test_a_truncated_image_is_named(tmp_path):
    path = tmp_path / "S001" / "cut.png"
    path.parent.mkdir()
    Image.new("RGB", (64, 64), "white").save(path)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(ValueError, match=rf"image {path} listed in the manifest cannot be read as an image"):
        read_image(path, "listed in the manifest")


def test_search_space_bounds_accept_exponent_numbers(tmp_path):
    from orchestrator.search_space import load_search_space

    path = tmp_path / "space.yaml"
    path.write_text("space:\n  lr_scale: {type: loguniform, low: 1e-1, high: 3}\n")
    assert load_search_space(path).space["lr_scale"].low == pytest.approx(0.1)
    path.write_text("space:\n  lr_scale: {type: loguniform, low: small, high: 3}\n")
    with pytest.raises(ConfigError, match="key 'space.lr_scale.low': expected float, got 'small'"):
        load_search_space(path)


# ---- the sweeps' own local Ray after kill -9 of the driver -------------------------------------------

RAY_DRIVER = """import json, sys, time
import psutil
from orchestrator.resources import init_ray
init_ray(None)
procs = [p for p in psutil.Process().children(recursive=True) if "ray_watchdog" not in " ".join(p.cmdline())]
print(json.dumps({p.pid: [p.name(), p.create_time()] for p in procs}), flush=True)
time.sleep(600)
"""


def test_no_ray_process_of_a_killed_driver_survives():
    """Without the watchdog, Ray 2.60's dashboard and runtime-env agents stay orphaned (checked by hand)."""
    import psutil

    driver = subprocess.Popen([sys.executable, "-c", RAY_DRIVER], cwd=REPO, stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        ray_procs = json.loads(driver.stdout.readline())
    finally:
        driver.kill()  # SIGKILL: no atexit, no ray.shutdown
        driver.wait()
    names = {name for name, _ in ray_procs.values()}
    assert {"raylet", "gcs_server", "ray::DashboardAgent", "ray::RuntimeEnvAgent"} <= names, names

    def survivors() -> list[str]:
        left = []
        for pid, (name, started) in ray_procs.items():
            try:
                proc = psutil.Process(int(pid))
                if proc.create_time() == started and proc.status() != psutil.STATUS_ZOMBIE:
                    left.append(f"{name} ({pid})")
            except psutil.NoSuchProcess:
                pass
        return left

    deadline = time.monotonic() + 30
    while survivors() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert survivors() == []


# ---- the disk filling up during a unit ---------------------------------------------------------------


def _stage0_unit(store):
    """A real tiny stage-0 unit (resnet18 at 32 px: its backbone file alone is ~45 MB)."""
    from clile_core.data.fold_data import data_hash, resolve_manifest
    from clile_core.data.manifest import read_manifest
    from clile_core.variants import get_variant
    from orchestrator.units import Plan, add_variant_fold

    cfg = load_run_config("synthetic", None, [*TINY_SETS, "stage0.epochs=1", "stage0.batch_size=16"])
    manifest_path, images = resolve_manifest(cfg.data)
    digest = data_hash(read_manifest(manifest_path), images, store.features_dir)
    return add_variant_fold(Plan("ablate"), cfg, get_variant("A0"), 1, digest, seed=0)


def _assert_no_partial_unit(store, key: str) -> None:
    assert not store.is_complete(key) and not (store.root / "units" / key).exists()
    assert not list((store.root / "units").glob(".tmp-*"))  # the unfinished workspace was removed


def test_a_full_disk_during_a_unit_is_named_and_leaves_no_partial_unit_real_enospc(tmp_path):
    """A real ENOSPC: the store on an 8 MB tmpfs (needs root's mount; skipped otherwise), then grown."""
    from orchestrator.execute import run_unit
    from orchestrator.store import ArtifactStore, StoreError

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        store = ArtifactStore(disk / "store")
        unit = _stage0_unit(store)
        with pytest.raises(StoreError) as info:
            run_unit(store, unit, lambda metrics: None)
        message = str(info.value)
        assert f"--store {store.location}" in message and "is full" in message and "Free space there" in message
        _assert_no_partial_unit(store, unit.key)
        # space freed: the same unit now completes
        subprocess.run(["mount", "-o", "remount,size=256m", str(disk)], check=True)
        record = run_unit(store, unit, lambda metrics: None)
        assert record["key"] == unit.key and store.is_complete(unit.key)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_during_a_unit_is_named_simulated_enospc(tmp_path):
    """The same error path without a mount: the write raises OSError(ENOSPC) as a full disk would."""
    import errno

    from orchestrator.store import ArtifactStore, StoreError
    from orchestrator.units import Plan, add_variant_fold
    from clile_core.variants import get_variant

    store = ArtifactStore(tmp_path / "store")
    unit = add_variant_fold(Plan("ablate"), RunConfig(), get_variant("A0"), 1, "hash", seed=0)
    with pytest.raises(StoreError, match=rf"--store {store.location}: the disk of .* is full .*rerun"):
        with store.workspace(unit) as work:
            (work / "backbone.pt").write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device", str(work / "backbone.pt"))
    _assert_no_partial_unit(store, unit.key)
    with store.workspace(unit) as work:  # rerun after freeing space
        (work / "unit.json").write_text("{}")
    assert store.is_complete(unit.key)
    with pytest.raises(RuntimeError, match="unrelated"):  # other errors pass through unchanged
        with store.workspace(add_variant_fold(Plan("ablate"), RunConfig(), get_variant("A0"), 2, "hash", seed=0)):
            raise RuntimeError("unrelated")


# ---- kills mid-sweep: a trial's worker process, the driver during the report phase --------------------

# 3 units (stage 0, stage I, stage II); stage I gets enough epochs to last seconds, to be killed in
SWEEP = ("--folds", "1", "--variants", "A0", "CL-ILE", "--set", "stage1.epochs=400")


def _start_sweep(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(command("ablate", *args), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _read_until(proc: subprocess.Popen, pattern: str) -> str:
    """The driver's stderr up to and including the first line matching ``pattern``."""
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if re.search(pattern, line.rstrip("\n")):
            return "".join(seen)
    raise AssertionError(f"the driver ended (code {proc.wait()}) before printing {pattern!r}:\n{''.join(seen)[-3000:]}")


def test_a_worker_killed_mid_trial_then_the_driver_during_the_report_phase(tmp_path):
    """Two failures in one sweep (each sweep costs CI a minute): the stage-I trial's process is killed with
    SIGKILL (the unit is retried and recorded once), then the driver, with -9, once every unit is recorded
    and the report is being built (a rerun resumes the parent, trains nothing and rebuilds the report)."""
    proc = _start_sweep(tmp_path, *SWEEP)
    head = _read_until(proc, r"^\[sweep\] start .*stage I$")
    deadline = time.monotonic() + 120
    owners: list[Path] = []
    while not owners and time.monotonic() < deadline:  # the trial's workspace names its process
        owners = list((tmp_path / "clile_store" / "units").glob(".tmp-stage1*/.owner.json"))
        time.sleep(0.2)
    assert owners, head
    os.kill(json.loads(owners[0].read_text())["pid"], signal.SIGKILL)
    head += _read_until(proc, r"timing: sweep phase")  # every unit trained and recorded; the report starts now
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert "failed; retry 1" in head, head[-4000:]
    frame = runs(tmp_path, "clile-ablation")
    assert list(frame[frame["tags.unit_key"].isna()]["status"]) == ["RUNNING"]  # the kill landed mid-report
    children = unit_runs(frame)
    assert sorted(children["status"]) == ["FINISHED"] * 3, children[["tags.unit_key", "status"]]
    assert children[children["tags.stage"] == "stage1"].iloc[0]["tags.retries"] == "1"

    result = run(tmp_path, "ablate", *SWEEP)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming unfinished parent run" in result.stderr and "reused 3 unit(s), trained 0" in result.stderr
    frame = runs(tmp_path, "clile-ablation")
    parents = frame[frame["tags.unit_key"].isna()]
    assert len(parents) == 1 and parents.iloc[0]["status"] == "FINISHED"
    children = unit_runs(frame)
    assert sorted(children["status"]) == ["FINISHED"] * 3  # no duplicate child after the rerun
    assert sorted(children["tags.unit_key"]) == completed_units(tmp_path / "clile_store")  # each unit once
    assert "| A0 |" in result.stdout and "| CL-ILE |" in result.stdout and "| — |" not in main_table(result.stdout)
