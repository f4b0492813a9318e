"""Writing a synthetic set to a folder: images, manifest.csv, then params.json as the completion marker;
regenerated only when the parameters differ, serialised between processes, never over the user's files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from filelock import FileLock
from tqdm import tqdm

from clile_core.atomic import atomic_dir, write_text
from clile_core.data.manifest import au_names, write_manifest
from clile_core.data.synthetic.drawing import apply_lighting, draw_face, sample_jitter
from clile_core.data.synthetic.subjects import RENDER_AUS, labels_from_intensities, make_subject, sample_intensities, session_weights
from clile_core.datasets import AU_SET_NAMES

# Bump when the drawing or sampling changes, so cached datasets from an older generator are rebuilt.
GENERATOR_VERSION = 4
PNG_COMPRESS_LEVEL = 1

MARKER = ".clile-synthetic"  # written first by the generator: the folder is its to overwrite
LOCK = ".lock"


def _params(*, subjects: int, frames_per_subject: int, size: int, au_set: str, seed: int, sessions: int) -> dict:
    if subjects < 3:
        raise ValueError(f"subjects must be at least 3 (the 3-fold protocol), got {subjects}")
    if frames_per_subject < 1:
        raise ValueError(f"frames per subject must be at least 1, got {frames_per_subject}")
    if size < 32:
        raise ValueError(f"size must be at least 32 px, got {size}")
    if sessions < 1:
        raise ValueError(f"sessions must be at least 1, got {sessions}")
    if au_set not in AU_SET_NAMES:
        raise ValueError(f"au_set must be one of {list(AU_SET_NAMES)}, got {au_set!r}")
    return {"generator_version": GENERATOR_VERSION, "subjects": subjects, "frames_per_subject": frames_per_subject,
            "size": size, "au_set": au_set, "seed": seed, "sessions": sessions}


def _session_lengths(frames: int, sessions: int) -> list[int]:
    return [frames // sessions + (1 if k < frames % sessions else 0) for k in range(sessions)]


def _render_subject(index: int, seq: np.random.SeedSequence, *, p: dict, images: Path, progress: tqdm) -> list[dict]:
    params_rng, label_rng, jitter_rng = (np.random.default_rng(s) for s in seq.spawn(3))
    subject = make_subject(params_rng)  # its own stream: a subject looks the same whatever the frame count
    name, aus = f"S{index + 1:03d}", au_names(p["au_set"])
    rows = []
    for k, n in enumerate(_session_lengths(p["frames_per_subject"], p["sessions"])):
        session = f"T{k + 1}"
        intensities = sample_intensities(subject, n, label_rng, session_weights(subject, label_rng))
        labels = labels_from_intensities(intensities, p["au_set"], label_rng)
        (images / name / session).mkdir(parents=True, exist_ok=True)
        for f, (pose, light) in enumerate(sample_jitter(n, jitter_rng)):
            face = draw_face(subject, dict(zip(RENDER_AUS, intensities[f].tolist())), p["size"], pose)
            rel = f"{name}/{session}/{f:05d}.png"
            apply_lighting(face, light, jitter_rng).save(images / rel, compress_level=PNG_COMPRESS_LEVEL)
            rows.append({"image": rel, "subject": name, "session": session, "frame": f, **dict(zip(aus, labels[f].tolist()))})
            progress.update()
    return rows


def generate(out_dir: str | Path, *, subjects: int = 18, frames_per_subject: int = 80, size: int = 112,
             au_set: str = "bp4d", seed: int = 0, sessions: int = 2) -> Path:
    """Render the dataset into out_dir (images/, manifest.csv, then params.json); returns the manifest."""
    p = _params(subjects=subjects, frames_per_subject=frames_per_subject, size=size, au_set=au_set, seed=seed,
                sessions=sessions)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).touch()  # before anything is deleted: a crashed generation stays ours to redo
    (out / "params.json").unlink(missing_ok=True)  # the completion marker goes first, so a crash is visible
    shutil.rmtree(out / "images", ignore_errors=True)
    rows: list[dict] = []
    with atomic_dir(out / "images") as images, \
            tqdm(total=subjects * frames_per_subject, desc="synthetic", unit="img", dynamic_ncols=True) as progress:
        for i, seq in enumerate(np.random.SeedSequence(seed).spawn(subjects)):
            rows += _render_subject(i, seq, p=p, images=images, progress=progress)
    manifest = out / "manifest.csv"
    write_manifest(pd.DataFrame(rows), manifest)
    write_text(out / "params.json", json.dumps(p, indent=2, sort_keys=True) + "\n")
    return manifest


def _check_ours(out: Path) -> None:
    """Refuse to overwrite a folder holding anything the generator did not write (the user's images)."""
    if (out / MARKER).exists() or (out / "params.json").exists():
        return
    foreign = sorted(p.name for p in out.iterdir() if p.name != LOCK) if out.is_dir() else []
    if foreign:
        raise ValueError(f"--out {out} is not empty ({', '.join(foreign[:5])}{', …' if len(foreign) > 5 else ''}) "
                         f"and was not written by this generator; choose an empty or new folder, "
                         f"or pass --force to replace its images/ and manifest.csv")


def _is_complete(out: Path, p: dict) -> bool:
    try:
        return json.loads((out / "params.json").read_text()) == p and (out / "manifest.csv").exists()
    except (OSError, ValueError):
        return False


def ensure_dataset(out_dir: str | Path, *, subjects: int = 18, frames_per_subject: int = 80, size: int = 112,
                   au_set: str = "bp4d", seed: int = 0, sessions: int = 2, force: bool = False) -> Path:
    """The manifest of the dataset in out_dir, generating it unless a complete one with these params is there.
    A non-empty folder the generator did not write is refused unless ``force``."""
    out = Path(out_dir)
    p = _params(subjects=subjects, frames_per_subject=frames_per_subject, size=size, au_set=au_set, seed=seed,
                sessions=sessions)
    if not force:
        _check_ours(out)  # before the lock file is created in it
    out.mkdir(parents=True, exist_ok=True)
    # one generation per folder at a time (parallel tests, trials on one host); the others then find it complete
    with FileLock(out / LOCK):
        if not _is_complete(out, p):
            return generate(out, subjects=subjects, frames_per_subject=frames_per_subject, size=size, au_set=au_set,
                            seed=seed, sessions=sessions)
    return out / "manifest.csv"
