"""Face alignment from a raw release: detect 5 landmarks (MTCNN), warp onto a canonical template, write crops.

Library only (no Ray): ``orchestrator.align`` plans jobs with :func:`plan_jobs` and runs :func:`run_job`
on Ray workers. Every image under SRC becomes one crop at the same relative path under OUT; every video
becomes a folder named after its stem with one crop per frame, ``{frame:05d}.jpg``, frames numbered
from 1 as DISFA's label files count. A frame that yields no crop (no face, unreadable, missing from a
truncated video) is never written; it gets a row in ``OUT/align_report.csv`` instead, and
``clile_core.data.prepare`` drops the frames that report lists.

Resume: a finished job leaves its report rows in ``OUT/.align_parts/<job>.csv`` (written atomically,
like every crop), so a rerun skips existing crops and frames already reported.
"""

from __future__ import annotations

import csv
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from PIL import Image

from clile_core.atomic import atomic_path

# ArcFace's 5-point template in a 112x112 crop (Deng et al., CVPR 2019; insightface): eye centres,
# nose tip, mouth corners. The de-facto standard canonical face; the margin option widens it for AUs,
# whose cues (forehead wrinkles, chin) sit outside a recognition crop.
TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
VIDEO_SUFFIXES = frozenset({".avi", ".mp4", ".mov", ".mkv", ".wmv", ".mpg", ".mpeg"})
FRAME_NAME = "{frame:05d}.jpg"
REPORT_NAME = "align_report.csv"
PARTS_DIR = ".align_parts"
REPORT_COLUMNS = ["output", "source", "frame", "written", "faces", "reason"]
JPEG_QUALITY = 95


class AlignError(Exception):
    """A set-up problem (missing package, bad folder) the user fixes from the message."""


@dataclass(frozen=True)
class AlignOptions:
    size: int = 240  # crop side in pixels (the paper's 240x240)
    margin: float = 0.15  # added on every side of the template's 112-px square, as a fraction of it
    detect_side: int = 640  # frames are downscaled to this longer side for detection (speed); warping uses full resolution
    min_face: int = 40  # smallest face searched, in pixels of the downscaled frame
    confidence: float = 0.95  # MTCNN probability a detection needs to count as a face
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.size < 16:
            raise AlignError(f"--size {self.size}: a crop needs at least 16 pixels")
        if not 0 <= self.margin <= 1:
            raise AlignError(f"--margin {self.margin}: allowed 0 to 1 (fraction of the template square per side)")
        if not 0 < self.confidence <= 1:
            raise AlignError(f"--confidence {self.confidence}: allowed (0, 1]")


@dataclass(frozen=True)
class ReportRow:
    output: str  # relative path under OUT (a video's folder + '/' when the whole video failed)
    source: str  # relative path under SRC
    frame: int | None  # 1-based video frame; None for images
    written: bool  # True: a crop exists and the row is a note (several faces)
    faces: int
    reason: str


# ---- geometry -------------------------------------------------------------------------------------


def template(size: int, margin: float) -> np.ndarray:
    """The 5 canonical points in a ``size``-pixel crop whose field of view is the 112-px square plus margin."""
    return (TEMPLATE_112 + 112 * margin) * size / (112 * (1 + 2 * margin))


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` onto ``dst``.

    Umeyama (1991), "Least-squares estimation of transformation parameters between two point patterns":
    R from the SVD of the cross-covariance, reflections excluded. Returns the 2x3 matrix [sR | t].
    """
    src, dst = np.asarray(src, float), np.asarray(dst, float)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    u, sigma, vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1  # the best orthogonal map would be a reflection; a face is never mirrored
    rotation = u @ np.diag(sign) @ vt
    scale = (sigma * sign).sum() / (s**2).sum(axis=1).mean()
    return np.hstack([scale * rotation, (mu_d - scale * rotation @ mu_s)[:, None]])


def warp(image: Image.Image, matrix: np.ndarray, size: int) -> Image.Image:
    """The ``size``-pixel crop that ``matrix`` (image -> crop coordinates) maps the image onto."""
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
    # PIL wants the crop -> image mapping; pixels outside the frame come out black
    return image.transform((size, size), Image.Transform.AFFINE, inverse.ravel().tolist(), Image.Resampling.BILINEAR)


# ---- detection ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Face:
    box: np.ndarray  # x0, y0, x1, y1 in the original frame
    prob: float
    points: np.ndarray  # (5, 2): left eye, right eye, nose, mouth left, mouth right

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))


def load_detector(options: AlignOptions):
    return _mtcnn(options.min_face, options.device)


@functools.lru_cache(maxsize=2)
def _mtcnn(min_face: int, device: str):
    """One MTCNN per worker process: its P/R/O-Net weights ship inside the facenet-pytorch wheel."""
    try:
        # only MTCNN: facenet-pytorch 2.6.0 pins torch<2.3, so it is installed with --no-deps
        from facenet_pytorch.models.mtcnn import MTCNN
    except ImportError as exc:
        raise AlignError(
            f"facenet-pytorch is not importable ({exc}); install it with "
            "`pip install --no-deps facenet-pytorch==2.6.0` (make setup does this)"
        ) from exc
    return MTCNN(keep_all=True, min_face_size=min_face, device=device).eval()


def detect(image: Image.Image, options: AlignOptions) -> list[Face]:
    """All detections in ``image``, largest first, in the image's own pixel coordinates."""
    factor = min(1.0, options.detect_side / max(image.size))
    small = image if factor == 1.0 else image.resize(
        (max(1, round(image.width * factor)), max(1, round(image.height * factor))), Image.Resampling.BILINEAR
    )
    if min(small.size) < options.min_face:  # MTCNN's pyramid would be empty (and it raises on that)
        return []
    boxes, probs, points = load_detector(options).detect(small, landmarks=True)
    if boxes is None:
        return []
    faces = [
        Face(np.asarray(b, float) / factor, float(p), np.asarray(pt, float).reshape(5, 2) / factor)
        for b, p, pt in zip(boxes, probs, points)
    ]
    return sorted(faces, key=lambda f: -f.area)


@dataclass(frozen=True)
class Aligned:
    crop: Image.Image | None
    faces: int  # confident detections
    reason: str  # empty when exactly one confident face was found


def align_image(image: Image.Image, options: AlignOptions) -> Aligned:
    faces = detect(image, options)
    confident = [f for f in faces if f.prob >= options.confidence]
    if not confident:
        best = f" (best detection p={max(f.prob for f in faces):.2f} < --confidence {options.confidence})" if faces else ""
        return Aligned(None, 0, f"no face{best}")
    face = confident[0]  # largest: in a lab recording the subject is the face nearest the camera
    crop = warp(image, similarity_transform(face.points, template(options.size, options.margin)), options.size)
    note = f"{len(confident)} faces; kept the largest" if len(confident) > 1 else ""
    return Aligned(crop, len(confident), note)


# ---- sources and jobs -----------------------------------------------------------------------------


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def video_folder(video: str) -> str:
    """Relative output folder of a video, with a trailing '/': also the report's key for a whole video."""
    return Path(video).with_suffix("").as_posix() + "/"


def frame_output(video: str, frame: int) -> str:
    """Relative output path of a video frame: ``<folder>/<stem>/00001.jpg``."""
    return video_folder(video) + FRAME_NAME.format(frame=frame)


def announced_frames(path: Path) -> int:
    """The frame count the container's header announces; 0 when unknown or unreadable."""
    import av

    try:
        with av.open(str(path)) as container:
            return int(container.streams.video[0].frames) if container.streams.video else 0
    except (av.error.FFmpegError, OSError):
        return 0


@dataclass(frozen=True)
class ImageJob:
    sources: tuple[str, ...]

    @property
    def frames(self) -> int:
        return len(self.sources)


@dataclass(frozen=True)
class VideoJob:
    source: str
    start: int = 1  # first frame, 1-based
    stop: int | None = None  # last frame, inclusive; None: until the stream ends (count unknown)

    @property
    def frames(self) -> int:
        return 0 if self.stop is None else self.stop - self.start + 1


Job = ImageJob | VideoJob


def job_name(job: Job) -> str:
    return hashlib.sha1(repr(job).encode()).hexdigest()[:16]


def scan(src: Path, out: Path) -> tuple[list[str], list[str]]:
    """Relative paths of the images and videos under ``src`` (hidden entries and ``out`` itself skipped)."""
    images, videos = [], []
    src, out = src.resolve(), out.resolve()
    inner = out.relative_to(src).parts if out.is_relative_to(src) else None  # OUT inside SRC: never re-align crops
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if any(part.startswith(".") for part in rel.parts) or (inner and rel.parts[:len(inner)] == inner) or not path.is_file():
            continue
        if is_image(path):
            images.append(rel.as_posix())
        elif is_video(path):
            videos.append(rel.as_posix())
    return images, videos


def read_rows(path: Path) -> list[ReportRow]:
    with open(path, newline="") as fh:
        return [
            ReportRow(r["output"], r["source"], int(r["frame"]) if r["frame"] else None, r["written"] == "1",
                      int(r["faces"]), r["reason"])
            for r in csv.DictReader(fh)
        ]


def write_rows(path: Path, rows: Iterable[ReportRow]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(REPORT_COLUMNS)
        for r in rows:
            writer.writerow([r.output, r.source, "" if r.frame is None else r.frame, int(r.written), r.faces, r.reason])


def part_rows(out: Path) -> list[ReportRow]:
    """Rows of every finished job so far, in completion order (later runs last)."""
    parts = sorted((out / PARTS_DIR).glob("*.csv"), key=lambda p: p.stat().st_mtime) if (out / PARTS_DIR).is_dir() else []
    return [row for part in parts for row in read_rows(part)]


def plan_jobs(src: Path, out: Path, *, images_per_job: int = 32, frames_per_job: int = 1000,
              only: set[str] | None = None) -> tuple[list[Job], int]:
    """Jobs for every frame not yet decided (no crop on disk, no report row), and how many are decided.

    ``only`` restricts images to those relative paths (e.g. the coded frames of a manifest).
    """
    images, videos = scan(src, out)
    if only is not None and only.isdisjoint(images):
        raise AlignError(f"none of the {len(only)} images the --only manifest lists is under {src} "
                         f"(e.g. {next(iter(sorted(only)), '-')}); its paths must be relative to SRC")
    decided = {r.output for r in part_rows(out) if not r.written}
    done = 0
    pending = []
    for rel in images:
        if only is not None and rel not in only:
            continue
        if rel in decided or (out / rel).exists():
            done += 1
        else:
            pending.append(rel)
    jobs: list[Job] = [ImageJob(tuple(pending[i:i + images_per_job])) for i in range(0, len(pending), images_per_job)]
    for rel in videos:
        if video_folder(rel) in decided:  # reported whole (unreadable): retrying would fail the same way
            done += 1
            continue
        total = announced_frames(src / rel)
        if total == 0:
            jobs.append(VideoJob(rel))
            continue
        for start in range(1, total + 1, frames_per_job):
            stop = min(total, start + frames_per_job - 1)
            todo = [f for f in range(start, stop + 1)
                    if frame_output(rel, f) not in decided and not (out / frame_output(rel, f)).exists()]
            done += stop - start + 1 - len(todo)
            if todo:
                jobs.append(VideoJob(rel, start, stop))
    return jobs, done


def remove_partial_writes(out: Path) -> int:
    """Delete the temporary files of writes a killed run never renamed (``atomic_path``'s ``.name.*.tmp``)."""
    stale = list(out.rglob(".*.tmp")) if out.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


# ---- running a job --------------------------------------------------------------------------------


def _save(crop: Image.Image, target: Path) -> None:
    suffix = target.suffix.lower()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP"}[suffix]
    with atomic_path(target) as tmp:
        crop.save(tmp, format=fmt, **({"quality": JPEG_QUALITY} if fmt == "JPEG" else {}))


def _align_one(image: Image.Image, *, output: str, source: str, frame: int | None, out: Path,
               options: AlignOptions) -> ReportRow | None:
    result = align_image(image.convert("RGB"), options)
    if result.crop is not None:
        _save(result.crop, out / output)
    if not result.reason:
        return None
    return ReportRow(output, source, frame, result.crop is not None, result.faces, result.reason)


def _image_frames(job: ImageJob, src: Path, out: Path) -> Iterator[tuple[str, Image.Image | ReportRow]]:
    for rel in job.sources:
        if (out / rel).exists():
            continue
        try:
            with Image.open(src / rel) as image:
                image.load()
                yield rel, image
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            yield rel, ReportRow(rel, rel, None, False, 0, f"unreadable image: {exc}")


def _video_frames(job: VideoJob, src: Path) -> Iterator[tuple[int, Image.Image | ReportRow]]:
    """Decoded frames of the job's span; frames the stream never delivers become report rows."""
    import av

    rel, seen = job.source, 0  # seen: the last frame the stream delivered, in or before the span
    try:
        container = av.open(str(src / rel))
    except (av.error.FFmpegError, OSError) as exc:
        reason = f"unreadable video: {exc}"
    else:
        reason = ""
        with container:
            try:
                for seen, frame in enumerate(container.decode(video=0), start=1):
                    if job.stop is not None and seen > job.stop:
                        break
                    if seen >= job.start:
                        yield seen, frame.to_image()
            except (av.error.FFmpegError, OSError) as exc:
                reason = f"decoding failed after frame {seen}: {exc}"
    if job.stop is None:
        if reason:  # the frame count is unknown: one row stands for the rest of the video
            yield seen + 1, ReportRow(video_folder(rel), rel, None, False, 0, reason)
        return
    reason = reason or f"video ended after frame {seen}; its header announces more"
    for index in range(max(seen + 1, job.start), job.stop + 1):
        yield index, ReportRow(frame_output(rel, index), rel, index, False, 0, reason)


def run_job(job: Job, *, src: Path, out: Path, options: AlignOptions,
            progress: Callable[[int], None] = lambda n: None) -> list[ReportRow]:
    """Align every frame of ``job`` not already on disk; record its report rows as a finished part."""
    rows: list[ReportRow] = []
    if isinstance(job, ImageJob):
        items = ((rel, rel, None, item) for rel, item in _image_frames(job, src, out))
    else:
        items = ((frame_output(job.source, index), job.source, index, item) for index, item in _video_frames(job, src))
    for output, source, frame, item in items:
        if isinstance(item, ReportRow):
            rows.append(item)
        elif not (out / output).exists():  # a crop from an interrupted run is complete (atomic write)
            row = _align_one(item, output=output, source=source, frame=frame, out=out, options=options)
            rows += [row] if row else []
        progress(1)
    write_rows(out / PARTS_DIR / f"{job_name(job)}.csv", rows)
    return rows


def merge_report(out: Path) -> list[ReportRow]:
    """``OUT/align_report.csv`` from every finished part; a frame reported twice keeps its latest row."""
    latest = {r.output: r for r in part_rows(out)}
    rows = [latest[k] for k in sorted(latest)]
    write_rows(out / REPORT_NAME, rows)
    return rows


def dropped_outputs(report: Path) -> tuple[set[str], set[str]]:
    """(frames, whole video folders ending in '/') that the report lists without a crop."""
    rows = [r for r in read_rows(report) if not r.written]
    return {r.output for r in rows if not r.output.endswith("/")}, {r.output for r in rows if r.output.endswith("/")}

