"""The artifact store: a directory (shared by every node on a cluster) holding one folder per completed unit.

``units/<key>/`` exists only once its unit completed: a unit trains in ``units/.tmp-<key>-…`` and is
renamed into place at the end, so a crash or ``kill -9`` never leaves a unit that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from clile_core.atomic import write_text
from orchestrator.units import Unit

UNIT_RECORD = "unit.json"
OWNER = ".owner.json"


class StoreError(ValueError):
    """The store cannot be used (not creatable, not writable); the message says which path and what to do."""


class ArtifactStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        try:
            (self.root / "units").mkdir(parents=True, exist_ok=True)
            (self.root / "specs").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"--store {self.root}: cannot create it ({exc}); pass --store <writable folder>") from None

    def check_writable(self) -> None:
        """Write and remove a probe file: a read-only store must fail before anything trains, not after."""
        try:
            fd, probe = tempfile.mkstemp(prefix=".probe-", dir=self.root / "units")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise StoreError(f"--store {self.root}: cannot write there ({exc}); pass --store <writable folder>") from None

    @property
    def features_dir(self) -> Path:
        return self.root / "features"

    def unit_dir(self, key: str) -> Path:
        return self.root / "units" / key

    def is_complete(self, key: str) -> bool:
        return (self.unit_dir(key) / UNIT_RECORD).exists()

    def record(self, key: str) -> dict[str, Any]:
        return json.loads((self.unit_dir(key) / UNIT_RECORD).read_text())

    def save_spec(self, unit: Unit) -> None:
        write_text(self.root / "specs" / f"{unit.key}.json", json.dumps(unit.to_json(), indent=1))

    def load_spec(self, key: str) -> Unit:
        path = self.root / "specs" / f"{key}.json"
        if not path.exists():
            raise FileNotFoundError(f"no spec for unit {key} in {self.root}: is the store shared with this node?")
        return Unit.from_json(json.loads(path.read_text()))

    def set_run_id(self, key: str, run_id: str) -> None:
        """Remember which MLflow run trained a unit, so later reuses can point back to it."""
        write_text(self.root / "runs" / f"{key}.txt", run_id)

    def trained_run_id(self, key: str) -> str | None:
        path = self.root / "runs" / f"{key}.txt"
        return path.read_text().strip() if path.exists() else None

    @contextmanager
    def workspace(self, unit: Unit) -> Iterator[Path]:
        """A private folder to train ``unit`` in; renamed to ``units/<key>`` only if the block succeeds."""
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{unit.key}-{uuid.uuid4().hex[:6]}-", dir=self.root / "units"))
        (tmp / OWNER).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
        try:
            yield tmp
            final = self.unit_dir(unit.key)
            if final.exists():  # a concurrent duplicate finished first: its result is as good as ours
                return
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def clean_stale(self) -> int:
        """Remove this host's leftovers of units killed mid-training (their process is gone); returns how many.

        Another host's workspaces are left alone: their owner may still be training.
        """
        removed = 0
        for path in (self.root / "units").glob(".tmp-*"):
            try:
                owner = json.loads((path / OWNER).read_text())
            except (OSError, ValueError):
                owner = {"host": socket.gethostname(), "pid": -1}
            if owner["host"] == socket.gethostname() and not _alive(owner["pid"]):
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        return removed


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
