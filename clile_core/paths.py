"""Relative paths read from files (manifest image column, model.json) must stay inside their root."""

from __future__ import annotations

import posixpath
from pathlib import Path, PurePosixPath, PureWindowsPath


def inside_root(root: str | Path, relative: str, where: str, start: str = "") -> Path:
    """``root / start / relative``, refusing an absolute ``relative`` or one whose ``..`` climb out of ``root``.

    The check is lexical on purpose: a symlink the user placed inside the root may point anywhere,
    but a path written in a file must never be able to name a file outside the root by itself.
    """
    text = str(relative).replace("\\", "/")
    normal = posixpath.normpath(posixpath.join(start, text))
    if PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute() or normal == ".." or normal.startswith("../"):
        raise ValueError(f"{where}: path {relative!r} leaves its root {root}; "
                         f"only relative paths that stay inside it are allowed")
    return Path(root) / normal
