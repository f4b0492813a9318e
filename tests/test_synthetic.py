"""The synthetic face set: determinism, manifest, label/image agreement, co-occurrence, identity bias, caching, CLI."""

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clile_core.data import synthetic as syn
from clile_core.data.synthetic import writer
from clile_core.data.manifest import au_names, read_manifest

TINY = dict(subjects=3, frames_per_subject=6, size=40, sessions=2)


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted((root / "images").rglob("*.png"))}


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path):
    a = syn.generate(tmp_path / "a", seed=5, **TINY)
    b = syn.generate(tmp_path / "b", seed=5, **TINY)
    c = syn.generate(tmp_path / "c", seed=6, **TINY)
    assert a.read_bytes() == b.read_bytes()
    files_a, files_b, files_c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert len(files_a) == 18 and files_a == files_b
    assert files_a.keys() == files_c.keys() and files_a != files_c


@pytest.mark.parametrize("au_set", ["bp4d", "disfa"])
def test_manifest_shape_columns_and_values(tmp_path, au_set):
    manifest = syn.generate(tmp_path, subjects=4, frames_per_subject=7, size=32, au_set=au_set, sessions=2)
    df = read_manifest(manifest)
    assert list(df.columns) == ["image", "subject", "session", "frame", *au_names(au_set)]
    assert len(df) == 28
    assert sorted(df["subject"].unique()) == ["S001", "S002", "S003", "S004"]
    assert sorted(df["session"].unique()) == ["T1", "T2"]
    assert sorted(df.groupby(["subject", "session"]).size().unique()) == [3, 4]  # 7 frames over 2 sessions
    assert df.iloc[0]["image"] == "S001/T1/00000.png"
    assert all((tmp_path / "images" / p).is_file() for p in df["image"])
    assert set(np.unique(df[au_names(au_set)].to_numpy())) <= {-1, 0, 1}
    params = json.loads((tmp_path / "params.json").read_text())
    assert params["au_set"] == au_set and params["subjects"] == 4 and params["size"] == 32


def _changed_rows(subject, au, size=96):
    off = np.asarray(syn.draw_face(subject, {}, size), dtype=np.int16)
    on = np.asarray(syn.draw_face(subject, {au: 1.0}, size), dtype=np.int16)
    changed = np.abs(on - off).max(axis=2) > 0
    return np.nonzero(changed)[0]


def _row(y, size=96):
    # face units are zoomed about FACE_CENTRE onto an image spanning [-1, 1]; the default pose is the identity
    return ((y - syn.FACE_CENTRE[1]) * syn.FACE_ZOOM + 1) / 2 * size


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_each_au_changes_pixels_in_its_own_region(seed):
    subject = syn.make_subject(np.random.default_rng(seed))
    chin = subject.face_cy + subject.face_h
    nose_bottom = subject.eye_y + subject.nose_len
    for au in (12, 15, 23, 24, 25):
        rows = _changed_rows(subject, au)
        assert rows.size > 0, au
        assert rows.min() >= _row(nose_bottom - 0.05) and rows.max() <= _row(chin), au
    for au in (1, 2, 4):  # at full intensity AU4 pulls the brows down onto the upper lids
        rows = _changed_rows(subject, au)
        assert rows.size > 0, au
        assert rows.min() >= _row(subject.hairline - 0.1) and rows.max() <= _row(subject.eye_y + 0.05), au
    for au in (6, 7):  # eyes and cheeks (AU6 also deepens the nasolabial folds down to the mouth corners)
        rows = _changed_rows(subject, au)
        assert rows.min() >= _row(subject.eye_y - 0.15) and rows.max() <= _row(subject.mouth_y + 0.08), au


def test_intensity_scales_the_change():
    subject = syn.make_subject(np.random.default_rng(0))
    off = np.asarray(syn.draw_face(subject, {}, 96), dtype=np.int16)
    diffs = [np.abs(np.asarray(syn.draw_face(subject, {12: a}, 96), dtype=np.int16) - off).sum() for a in (0.2, 0.5, 1.0)]
    assert 0 < diffs[0] < diffs[1] < diffs[2]


def _intensities(n_subjects=6, frames=400, seed=0):
    rng = np.random.default_rng(seed)
    subjects = [syn.make_subject(rng) for _ in range(n_subjects)]
    return [syn.sample_intensities(s, frames, rng) for s in subjects]


def test_happiness_makes_au6_and_au12_co_occur():
    on = np.concatenate(_intensities()) >= syn.THRESHOLD
    au6, au12 = on[:, syn.AU_INDEX[6]], on[:, syn.AU_INDEX[12]]
    assert au6.sum() > 20
    assert au12[au6].mean() > au12.mean() + 0.2
    au1, au4 = on[:, syn.AU_INDEX[1]], on[:, syn.AU_INDEX[4]]
    assert (au1 & au4).mean() < min(au1.mean(), au4.mean())


def test_labels_threshold_intensities_and_include_uncoded_and_weak_activations():
    intensities = np.concatenate(_intensities())
    labels = syn.labels_from_intensities(intensities, "disfa", np.random.default_rng(0))
    cols = [syn.AU_INDEX[a] for a in (1, 2, 4, 6, 9, 12, 25, 26)]
    coded = labels >= 0
    assert np.array_equal(labels[coded], (intensities[:, cols] >= 0.5)[coded].astype(int))
    assert 0.005 < (labels == -1).mean() < 0.03
    weak = (intensities > 0.05) & (intensities < 0.5)
    assert weak.mean() > 0.02


def test_sessions_are_smooth_sequences():
    x = _intensities(n_subjects=2)[0]
    steps = np.abs(np.diff(x, axis=0)).sum(axis=1)
    assert np.median(steps) < 0.5 * np.abs(x - x.mean(axis=0)).sum(axis=1).mean()


def test_subjects_have_their_own_base_rates_and_resting_faces():
    rates = np.array([(x >= syn.THRESHOLD).mean(axis=0) for x in _intensities(frames=1500)])
    assert (rates.max(axis=0) - rates.min(axis=0)).max() > 0.15
    subjects = [syn.make_subject(np.random.default_rng(s)) for s in range(10)]
    assert all(s.rest and set(s.rest) <= set(syn.MIMIC_AUS) for s in subjects)
    assert len({tuple(sorted(s.rest)) for s in subjects}) > 3
    # the resting face is drawn with the AUs' own geometry: at rest a subject looks like its
    # mimic-free twin showing those AUs weakly (up to float rounding of a few edge pixels)
    for subject in subjects:
        plain = dataclasses.replace(subject, rest={})
        rest_face = np.asarray(syn.draw_face(subject, {}, 64), dtype=np.int16)
        acting = np.asarray(syn.draw_face(plain, {au: r / subject.gain for au, r in subject.rest.items()}, 64), dtype=np.int16)
        neutral = np.asarray(syn.draw_face(plain, {}, 64), dtype=np.int16)
        assert (rest_face != acting).any(axis=2).mean() < 0.002
        assert (rest_face != neutral).any(axis=2).mean() > 0.005


def test_ensure_dataset_is_idempotent_and_regenerates_on_change(tmp_path):
    manifest = syn.ensure_dataset(tmp_path, seed=1, **TINY)
    image = tmp_path / "images" / "S001" / "T1" / "00000.png"
    stamps = {p: p.stat().st_mtime_ns for p in (manifest, image, tmp_path / "params.json")}
    old = image.read_bytes()
    assert syn.ensure_dataset(tmp_path, seed=1, **TINY) == manifest
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    syn.ensure_dataset(tmp_path, seed=2, **TINY)
    assert json.loads((tmp_path / "params.json").read_text())["seed"] == 2
    assert image.read_bytes() != old

    (tmp_path / "images" / "S001" / "T1" / "00001.png").unlink()  # a half-written folder has no marker
    (tmp_path / "params.json").unlink()
    syn.ensure_dataset(tmp_path, seed=2, subjects=3, frames_per_subject=2, size=40, sessions=1)
    df = pd.read_csv(manifest)
    assert len(df) == 6 and len(list((tmp_path / "images").rglob("*.png"))) == 6  # old images are gone


def test_cli_generates_and_rejects_bad_values(tmp_path, capsys):
    out = tmp_path / "cli"
    assert syn.main(["--out", str(out), "--subjects", "3", "--frames-per-subject", "2", "--size", "32", "--au-set", "disfa"]) == 0
    assert list(read_manifest(out / "manifest.csv").columns[4:]) == au_names("disfa")
    capsys.readouterr()
    for bad in (["--subjects", "2"], ["--size", "31"], ["--frames-per-subject", "0"]):
        assert syn.main(["--out", str(tmp_path / "bad"), *bad]) == 2
        assert capsys.readouterr().err.startswith("error: ")
    assert not os.path.exists(tmp_path / "bad" / "params.json")


def test_images_and_manifest_match_the_generator_before_its_split_into_modules(tmp_path):
    # digests of this exact set written by the single-module generator (commit 26fd249); pixels rather than
    # PNG bytes, so a different zlib build cannot fail it while any change to what is drawn does
    manifest = syn.generate(tmp_path, subjects=4, frames_per_subject=6, size=48, au_set="bp4d", seed=3)
    files = sorted((tmp_path / "images").rglob("*.png"))
    pixels = hashlib.sha256(b"".join(np.asarray(Image.open(f)).tobytes() for f in files)).hexdigest()
    assert len(files) == 24
    assert pixels == "33ca0f21ffa6617dff4da8582ebc4e31ba6d93145eece4bc268d955094065218"
    assert hashlib.sha256(manifest.read_bytes()).hexdigest() == "e9fa0caee65ac85c8621d03f638951732b3da083b5df0270a950f5f631c13edb"


def test_concurrent_ensure_dataset_generates_once(tmp_path, monkeypatch):
    # the second caller must wait on the folder's lock and then find the set complete, not render it again
    calls = []
    real_generate = writer.generate

    def slow_generate(*args, **kwargs):
        calls.append(threading.current_thread().name)
        time.sleep(0.5)  # keeps the first generation running while the second caller arrives
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(writer, "generate", slow_generate)
    tiny = dict(subjects=3, frames_per_subject=1, size=32, sessions=1)
    threads = [threading.Thread(target=syn.ensure_dataset, args=(tmp_path,), kwargs=tiny, name=f"t{i}") for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(read_manifest(tmp_path / "manifest.csv")) == 3


def test_module_runs_as_a_command(tmp_path):
    result = subprocess.run([sys.executable, "-m", "clile_core.data.synthetic", "--out", str(tmp_path / "set"), "--subjects", "3",
                             "--frames-per-subject", "1", "--size", "32"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "set" / "manifest.csv") and "RuntimeWarning" not in result.stderr
