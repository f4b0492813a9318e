"""Content digests: of one file, and of everything the images of a manifest hold, as one digest: part of every unit's and feature cache's key, so
re-aligned or replaced pixels under an unchanged manifest invalidate what was trained on them.

Hashing every file on every run would cost minutes on BP4D (~146k frames), so each file's content hash is
cached with its size and modification time, and recomputed only when those change.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from clile_core.atomic import write_text


def file_hash(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def images_digest(images_root: Path, relpaths: list[str], cache_file: Path) -> str:
    """Digest of (relative path, content) over ``relpaths``; per-file hashes reused from ``cache_file`` when a
    file's size and mtime are unchanged. A missing image is left to the loaders to report by name."""
    try:
        cached: dict[str, list] = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cached = {}
    fresh: dict[str, list] = {}
    digest = hashlib.sha256()
    for rel in relpaths:
        try:
            stat = os.stat(images_root / rel)
        except FileNotFoundError:
            digest.update(f"{rel}:missing\n".encode())
            continue
        entry = cached.get(rel)
        if entry is None or entry[:2] != [stat.st_size, stat.st_mtime_ns]:
            entry = [stat.st_size, stat.st_mtime_ns, file_hash(images_root / rel)]
        fresh[rel] = entry
        digest.update(f"{rel}:{entry[2]}\n".encode())
    if fresh != cached:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        write_text(cache_file, json.dumps(fresh))
    return digest.hexdigest()[:16]
