"""Write a manifest from a dataset's raw release (BP4D, DISFA, any registered importer):
`python -m clile_core.data.prepare bp4d --labels ...`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from clile_core.data import align
from clile_core.data.folds import check_subjects, unlisted_subjects
from clile_core.data.manifest import ManifestError, au_columns, validate, write_manifest
from clile_core.datasets import IMPORTABLE_NAMES, get_dataset
from clile_core.log import get_logger

EXAMPLES = 5
log = get_logger("prepare")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m clile_core.data.prepare", description=__doc__)
    parser.add_argument("dataset", choices=IMPORTABLE_NAMES)
    parser.add_argument("--labels", required=True, type=Path, help="release root, e.g. the folder holding AUCoding/ (BP4D) or ActionUnit_Labels/ (DISFA)")
    parser.add_argument("--images", required=True, type=Path, help="root the manifest's image paths are relative to")
    parser.add_argument("--out", required=True, type=Path, help="manifest to write (.csv or .parquet)")
    parser.add_argument("--image-pattern", help="image path per frame, e.g. '{subject}/{session}/{frame:04d}.jpg'")
    parser.add_argument("--drop-unlisted", action="store_true",
                        help="drop subjects that no fold list names instead of refusing")
    parser.add_argument("--allow-missing", action="store_true", help="drop frames whose image is missing instead of refusing")
    return parser


def _missing_images(df: pd.DataFrame, images: Path) -> pd.Series:
    return pd.Series([not (images / name).is_file() for name in df["image"]], index=df.index, dtype=bool)


def _drop_missing(df: pd.DataFrame, images: Path, allow_missing: bool) -> pd.DataFrame:
    missing = _missing_images(df, images)
    if not missing.any():
        return df
    examples = ", ".join(df.loc[missing, "image"].head(EXAMPLES))
    report = f"{int(missing.sum())} of {len(df)} images are missing under {images} (e.g. {examples})"
    if not allow_missing:
        raise ManifestError(f"{report}; check --images / --image-pattern, or pass --allow-missing to drop those frames")
    if missing.all():
        raise ManifestError(f"{report}; nothing would be left - check --images / --image-pattern")
    log.warning(f"warning: {report}; dropping those frames (--allow-missing)")
    return df.loc[~missing].reset_index(drop=True)


def _drop_unaligned(df: pd.DataFrame, images: Path) -> pd.DataFrame:
    """Frames that `orchestrator.align` reported without a crop (no face, unreadable, truncated video)."""
    report = images / align.REPORT_NAME
    if not report.is_file():
        return df
    frames, videos = align.dropped_outputs(report)
    dropped = df["image"].isin(frames) | df["image"].map(lambda p: Path(p).parent.as_posix() + "/" in videos)
    if dropped.any():
        log.info(f"{int(dropped.sum())} of {len(df)} frames have no aligned crop ({report} lists why); dropping them")
    return df.loc[~dropped].reset_index(drop=True)


def _drop_unlisted(df: pd.DataFrame, dataset: str, drop: bool) -> pd.DataFrame:
    unlisted = unlisted_subjects(dataset, df["subject"].astype(str).unique().tolist())
    if not unlisted:
        return df
    if not drop:
        check_subjects(dataset, unlisted, f"--labels {dataset}", "pass --drop-unlisted to leave them out of the manifest")
    log.warning(f"warning: dropping subject(s) {unlisted}: in no fold of the {dataset} protocol (--drop-unlisted)")
    return df.loc[~df["subject"].isin(unlisted)].reset_index(drop=True)


def summary(df: pd.DataFrame, dataset: str, out: Path) -> str:
    aus = au_columns(df)
    labels = df[aus]
    # positive rate over coded frames only: uncoded (-1) frames are masked in training too
    rates = ", ".join(f"{au} {(labels[au] == 1).sum() / max(int((labels[au] >= 0).sum()), 1):.1%}" for au in aus)
    return (
        f"Wrote {out}: {dataset}, {df['subject'].nunique()} subjects, {len(df)} frames. "
        f"Positive rate per AU (coded frames): {rates}. Uncoded labels (-1): {int((labels == -1).to_numpy().sum())}."
    )


def run(args: argparse.Namespace) -> None:
    if not args.images.is_dir():
        raise ManifestError(f"--images {args.images} is not a directory")
    pattern = {"image_pattern": args.image_pattern} if args.image_pattern else {}
    df = validate(get_dataset(args.dataset).importer(args.labels, **pattern), "labels")  # image paths stay under --images
    df = _drop_unlisted(df, args.dataset, args.drop_unlisted)
    df = _drop_missing(_drop_unaligned(df, args.images), args.images, args.allow_missing)
    write_manifest(df, args.out)
    log.info(summary(df, args.dataset, args.out))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        run(args)
    except (ValueError, OSError) as exc:  # ManifestError included
        # these are data/setup problems the user fixes from the message; a traceback only hides it
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
