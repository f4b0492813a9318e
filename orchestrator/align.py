"""Align a raw BP4D / DISFA release on Ray: ``python -m orchestrator.align SRC --out DIR [--size 240]``.

Every image under SRC becomes a crop at the same relative path under DIR; every video a folder of
``{frame:05d}.jpg`` crops (frames counted from 1, as DISFA's labels). Frames without a crop are listed
in ``DIR/align_report.csv``. Jobs (32 images, or up to 1000 frames of one video) run as Ray tasks, one
CPU each (locally: all cores), on a GPU share where the cluster has GPUs. Rerunning resumes.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import sys
import time
from pathlib import Path

from tqdm import tqdm

from clile_core.data import align
from clile_core.data.manifest import ManifestError, read_manifest
from clile_core.log import get_logger

log = get_logger("align")

POLL_S = 0.5


class JobsFailed(Exception):
    """Some jobs raised even after Ray's retries; the others finished."""


def _parser() -> argparse.ArgumentParser:
    defaults = align.AlignOptions()
    parser = argparse.ArgumentParser(prog="python -m orchestrator.align", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="release folder: BP4D frame tree and/or DISFA videos")
    parser.add_argument("--out", required=True, type=Path, help="output folder for the crops and align_report.csv")
    parser.add_argument("--size", type=int, default=defaults.size, help="crop side in pixels (default: %(default)s, as the paper)")
    parser.add_argument("--margin", type=float, default=defaults.margin,
                        help="context around the canonical face, per side, as a fraction of it (default: %(default)s)")
    parser.add_argument("--detect-side", type=int, default=defaults.detect_side,
                        help="longer side frames are downscaled to for detection (default: %(default)s)")
    parser.add_argument("--min-face", type=int, default=defaults.min_face,
                        help="smallest face, in pixels at the detection scale (default: %(default)s)")
    parser.add_argument("--confidence", type=float, default=defaults.confidence,
                        help="MTCNN probability a face needs (default: %(default)s)")
    parser.add_argument("--only", type=Path, help="a manifest (CSV/Parquet): align only the images its 'image' column lists")
    parser.add_argument("--address", default=None, help="Ray cluster address (auto or HOST:PORT); default: a local one on all cores")
    parser.add_argument("--gpus-per-task", type=float, default=0.25,
                        help="GPU share per task where the cluster has GPUs (default: %(default)s)")
    return parser


def _only(path: Path | None) -> set[str] | None:
    return None if path is None else set(read_manifest(path)["image"].astype(str))


def _check(args: argparse.Namespace) -> None:
    if not args.src.is_dir():
        raise align.AlignError(f"SRC {args.src} is not a directory; give the release folder holding the frames or videos")
    if args.out.resolve() == args.src.resolve():
        raise align.AlignError(f"--out {args.out} is SRC itself; crops would overwrite the release - choose another folder")


def _run_remote(jobs: list[align.Job], args: argparse.Namespace, options: align.AlignOptions) -> list[align.ReportRow]:
    import ray

    from orchestrator.resources import init_ray  # here: it pulls in the training stack, which a finished rerun never needs

    cluster = init_ray(args.address)
    gpus = args.gpus_per_task if cluster.get("GPU", 0) > 0 else 0.0
    log.info(f"cluster: {int(cluster.get('CPU', 0))} CPU, {int(cluster.get('GPU', 0))} GPU; "
             f"MTCNN on {'GPU' if gpus else 'CPU'}")

    @ray.remote(num_cpus=0)  # a counter: it must not take a core from the alignment tasks
    class Progress:
        """Frames done since the driver last asked: per-frame progress while jobs are long."""

        def __init__(self) -> None:
            self.count = 0

        def add(self, n: int) -> None:
            self.count += n

        def take(self) -> int:
            n, self.count = self.count, 0
            return n

    @ray.remote(num_cpus=1, num_gpus=gpus, max_retries=2)  # retries a dead worker (OOM, lost node), not a raise
    def run(job: align.Job, progress) -> list[align.ReportRow]:
        import torch

        torch.set_num_threads(1)  # one task per core; more threads would only contend
        device = "cuda" if gpus and torch.cuda.is_available() else "cpu"
        step = {"n": 0}

        def tick(n: int) -> None:
            step["n"] += n
            if step["n"] >= 8:  # batched: an actor call per frame would cost more than it shows
                progress.add.remote(step["n"])
                step["n"] = 0

        rows = align.run_job(job, src=args.src, out=args.out, options=dataclasses.replace(options, device=device),
                              progress=tick)
        progress.add.remote(step["n"])
        return rows

    progress = Progress.remote()
    # longest jobs first, so a long video never starts last and runs alone
    pending = [run.remote(job, progress) for job in sorted(jobs, key=lambda j: -j.frames)]
    rows: list[align.ReportRow] = []
    failures: list[str] = []
    with tqdm(total=sum(j.frames for j in jobs), unit="frame", desc="align", dynamic_ncols=True) as bar:
        while pending:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
            for ref in ready:
                try:
                    rows += ray.get(ref)
                except ray.exceptions.RayError as exc:  # one bad job must not stop the others
                    failures.append(str(exc).strip().splitlines()[-1])
            bar.update(ray.get(progress.take.remote()))
    if failures:
        raise JobsFailed(f"{len(failures)} of {len(jobs)} jobs failed (first: {failures[0]}); their finished crops are "
                         "kept - rerun the same command to retry the rest")
    return rows


def run(args: argparse.Namespace) -> int:
    _check(args)
    options = align.AlignOptions(size=args.size, margin=args.margin, detect_side=args.detect_side,
                                 min_face=args.min_face, confidence=args.confidence)
    args.src, args.out = args.src.resolve(), args.out.resolve()  # Ray workers run in another directory
    jobs, done = align.plan_jobs(args.src, args.out, only=_only(args.only))
    if stale := align.remove_partial_writes(args.out):
        log.info(f"removed {stale} partial files an interrupted run left")
    frames = sum(j.frames for j in jobs)
    log.info(f"{args.src} -> {args.out}: {len(jobs)} jobs, {frames} frames to align, {done} already done")
    if jobs:
        align.load_detector(options)  # a missing facenet-pytorch is said here, not by every worker
    start = time.time()
    try:
        rows = _run_remote(jobs, args, options) if jobs else []
    except JobsFailed as exc:
        align.merge_report(args.out)
        log.error("%s", exc)
        return 1
    report_file = args.out / align.REPORT_NAME
    # nothing ran: leave the report untouched, so a finished rerun writes nothing at all
    report = align.merge_report(args.out) if jobs or not report_file.exists() else align.read_rows(report_file)
    missing = collections.Counter(r.reason.split(" (")[0].split(":")[0].split(" after")[0] for r in report if not r.written)
    notes = sum(r.written for r in report)
    log.info(f"done in {time.time() - start:.0f}s ({len(rows)} new report rows). {report_file}: "
             f"{sum(missing.values())} frames without a crop ({', '.join(f'{k}: {v}' for k, v in missing.most_common()) or 'none'}), "
             f"{notes} crops noted (several faces, largest kept)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except (align.AlignError, ManifestError, OSError) as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.warning("interrupted; finished crops are kept - rerun the same command to resume")
        return 130


if __name__ == "__main__":
    sys.exit(main())
