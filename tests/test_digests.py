"""Image content in the keys: changed pixels change the data hash, touched-but-equal files do not, and
unchanged files are not read again."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from PIL import Image

from clile_core.data import digests
from clile_core.data.fold_data import data_hash


def _write(path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(path)


def test_data_hash_follows_pixels_not_timestamps(tmp_path, monkeypatch):
    images, cache = tmp_path / "images", tmp_path / "cache"
    manifest = pd.DataFrame({"image": [f"S1/{i}.png" for i in range(3)], "subject": "S1", "session": "T1",
                             "frame": range(3), "AU1": [1, 0, 1]})
    for i in range(3):
        _write(images / f"S1/{i}.png", i)
    first = data_hash(manifest, images, cache)

    reads = []
    original = digests.file_hash
    monkeypatch.setattr(digests, "file_hash", lambda path: reads.append(path) or original(path))
    assert data_hash(manifest, images, cache) == first and reads == []  # sizes and mtimes cached: nothing read

    os.utime(images / "S1/1.png", ns=(1, 1))  # touched, same bytes: re-read once, same hash
    assert data_hash(manifest, images, cache) == first and len(reads) == 1

    _write(images / "S1/2.png", 99)  # re-aligned: other pixels under the same manifest
    changed = data_hash(manifest, images, cache)
    assert changed != first
    relabelled = manifest.assign(AU1=[0, 0, 1])  # and the manifest's rows count too
    assert data_hash(relabelled, images, cache) not in (first, changed)
