"""The artifact store: one folder per completed unit, in a local directory or in object storage.

``units/<key>/`` exists only once its unit completed: a unit trains in ``units/.tmp-<key>-…`` and is
renamed into place at the end, so a crash or ``kill -9`` never leaves a unit that looks complete.

With a URI (``s3://bucket/prefix``, ``gs://…``) the store lives in object storage, which needs no disk
shared between nodes: each node works in a local scratch directory (``$CLILE_SCRATCH``, default
``~/.cache/clile/scratch/<hash of the URI>``), uploads a finished unit whole with its ``unit.json`` (the
"complete" marker) last, and fetches a unit or a fold's feature cache once, when it first needs it.
A unit being trained is locked on its node (a lock file) and, with object storage, across nodes (a lease
object in the bucket, see ``RemoteLease``).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock

from clile_core.atomic import write_text
from clile_core.names import FEATURES_MARKER, OWNER, UNIT_RECORD  # FEATURES_MARKER: written last, so uploaded last too
from orchestrator.units import Unit

SCRATCH_ENV = "CLILE_SCRATCH"
CHUNK = 8 << 20
OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)


def is_uri(location: str) -> bool:
    return "://" in str(location) and not str(location).startswith("file://")


class RemoteFiles:
    """Object storage through pyarrow's filesystem layer (S3, GCS, …): whole objects, no rename, so
    completeness is a marker object written after everything else."""

    def __init__(self, uri: str):
        from pyarrow import fs

        self._fs_module = fs
        try:
            self.fs, self.base = fs.FileSystem.from_uri(uri)
        except (ValueError, OSError) as exc:
            raise StoreError(f"--store {uri}: not a usable storage URI ({exc}); e.g. s3://bucket/prefix "
                             f"(endpoint and scheme as ?endpoint_override=host:port&scheme=http)") from None
        self.base = self.base.rstrip("/")

    def _path(self, rel: str) -> str:
        return f"{self.base}/{rel}"

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self._path(rel)).type != self._fs_module.FileType.NotFound

    def read_text(self, rel: str) -> str | None:
        if not self.exists(rel):
            return None
        with self.fs.open_input_stream(self._path(rel)) as stream:
            return stream.read().decode()

    def write_text(self, rel: str, text: str) -> None:
        with self.fs.open_output_stream(self._path(rel)) as stream:
            stream.write(text.encode())

    def delete(self, rel: str) -> None:
        self.fs.delete_file(self._path(rel))

    def upload_dir(self, local: Path, rel: str, last: str) -> None:
        """Every file under ``local``, the marker ``last`` after all others."""
        files = sorted(p for p in local.rglob("*") if p.is_file() and p.name != OWNER)
        for path in sorted(files, key=lambda p: p.relative_to(local).as_posix() == last):
            with open(path, "rb") as src, self.fs.open_output_stream(self._path(f"{rel}/{path.relative_to(local).as_posix()}")) as dst:
                shutil.copyfileobj(src, dst, CHUNK)

    def download_dir(self, rel: str, local: Path) -> None:
        """Copy ``rel`` into a fresh folder beside ``local``, renamed onto it when whole."""
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".fetch-{local.name}-", dir=local.parent))
        try:
            selector = self._fs_module.FileSelector(self._path(rel), recursive=True)
            for info in self.fs.get_file_info(selector):
                if info.type != self._fs_module.FileType.File:
                    continue
                target = tmp / info.path[len(self._path(rel)) + 1:]
                target.parent.mkdir(parents=True, exist_ok=True)
                with self.fs.open_input_stream(info.path) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
            if not local.exists():  # another trial on this node may have fetched it meanwhile
                os.replace(tmp, local)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class RemoteLease:
    """A lock shared by every node that sees the bucket: an object ``{"token", "expires"}`` its holder
    renews every third of ``lease`` seconds; a lease not renewed in time belongs to a dead holder and is
    taken over.

    pyarrow's filesystems offer no create-if-absent, so a free lock is claimed by writing our token,
    waiting ``settle`` seconds and reading it back. Two nodes that both found it free each wrote within one
    read+write round trip of the other's write; as long as that round trip is shorter than ``settle``,
    both read back after both writes, see the same (last) token, and exactly one of them holds the lock.
    """

    def __init__(self, remote: RemoteFiles, rel: str, *, lease: float = 60.0, settle: float = 1.0, poll: float = 0.5):
        self.remote, self.rel = remote, rel
        self.lease, self.settle, self.poll = lease, settle, poll
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _holder(self) -> dict[str, Any] | None:
        text = self.remote.read_text(self.rel)
        try:
            held = json.loads(text) if text else None
        except ValueError:  # cannot happen with whole-object writes; a stray object counts as free
            return None
        return held if held and held.get("expires", 0) > time.time() else None

    def _claim(self) -> None:
        self.remote.write_text(self.rel, json.dumps({"token": self.token, "expires": time.time() + self.lease}))

    def _renew(self) -> None:
        while not self._stop.wait(self.lease / 3):
            try:
                if (self._holder() or {}).get("token") == self.token:
                    self._claim()
            except OSError:  # a network hiccup: the next try still comes before the lease runs out
                pass

    def __enter__(self) -> "RemoteLease":
        while True:
            if self._holder() is None:
                self._claim()
                time.sleep(self.settle)
                if (self._holder() or {}).get("token") == self.token:
                    break
            time.sleep(self.poll)
        self._renewer = threading.Thread(target=self._renew, name=f"lease {self.rel}", daemon=True)
        self._renewer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._renewer:
            self._renewer.join()
        if (self._holder() or {}).get("token") == self.token:
            self.remote.delete(self.rel)


def default_scratch(uri: str) -> Path:
    base = Path(os.environ.get(SCRATCH_ENV) or Path.home() / ".cache" / "clile" / "scratch")
    return base / hashlib.sha256(uri.encode()).hexdigest()[:12]


class StoreError(ValueError):
    """The store cannot be used (not creatable, not writable); the message says which path and what to do."""


class ArtifactStore:
    def __init__(self, location: str | os.PathLike):
        self.remote = RemoteFiles(str(location)) if is_uri(str(location)) else None
        self.root = default_scratch(str(location)).resolve() if self.remote else Path(location).resolve()
        self.location = str(location) if self.remote else str(self.root)  # what trials on any node open
        try:
            (self.root / "units").mkdir(parents=True, exist_ok=True)
            (self.root / "specs").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            where = f"scratch directory {self.root} (set ${SCRATCH_ENV})" if self.remote else "it"
            raise StoreError(f"--store {self.location}: cannot create {where} ({exc}); pass --store <writable folder>") from None

    def check_writable(self) -> None:
        """Write and remove a probe file: a read-only store must fail before anything trains, not after."""
        try:
            fd, probe = tempfile.mkstemp(prefix=".probe-", dir=self.root / "units")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise StoreError(f"--store {self.root}: cannot write there ({exc}); pass --store <writable folder>") from None
        if self.remote:
            name = f"probes/{socket.gethostname()}-{os.getpid()}"
            try:
                self.remote.write_text(name, "probe")
                self.remote.delete(name)
            except OSError as exc:
                raise StoreError(f"--store {self.location}: cannot write there ({exc}); check the bucket, "
                                 f"its credentials (AWS_ACCESS_KEY_ID, …) and the endpoint") from None

    @property
    def features_dir(self) -> Path:
        return self.root / "features"

    def _local(self, key: str) -> Path:
        return self.root / "units" / key

    def unit_dir(self, key: str) -> Path:
        """The unit's local folder; from object storage it is fetched (once per node) on first use."""
        local = self._local(key)
        if self.remote and not (local / UNIT_RECORD).exists() and self.remote.exists(f"units/{key}/{UNIT_RECORD}"):
            self.remote.download_dir(f"units/{key}", local)
        return local

    def is_complete(self, key: str) -> bool:
        if (self._local(key) / UNIT_RECORD).exists():
            return True
        return bool(self.remote) and self.remote.exists(f"units/{key}/{UNIT_RECORD}")

    def record(self, key: str) -> dict[str, Any]:
        return json.loads((self.unit_dir(key) / UNIT_RECORD).read_text())

    def _write(self, rel: str, text: str) -> None:
        write_text(self.root / rel, text)
        if self.remote:
            self.remote.write_text(rel, text)

    def _read(self, rel: str) -> str | None:
        path = self.root / rel
        if path.exists():
            return path.read_text()
        return self.remote.read_text(rel) if self.remote else None

    def save_spec(self, unit: Unit) -> None:
        self._write(f"specs/{unit.key}.json", json.dumps(unit.to_json(), indent=1))

    def load_spec(self, key: str) -> Unit:
        text = self._read(f"specs/{key}.json")
        if text is None:
            raise FileNotFoundError(f"no spec for unit {key} in {self.location}: is the store shared with this node? "
                                    f"(use object storage, --store s3://bucket/prefix, when nodes share no disk)")
        return Unit.from_json(json.loads(text))

    def set_run_id(self, key: str, run_id: str) -> None:
        """Remember which MLflow run trained a unit, so later reuses can point back to it."""
        self._write(f"runs/{key}.txt", run_id)

    def trained_run_id(self, key: str) -> str | None:
        text = self._read(f"runs/{key}.txt")
        return text.strip() if text is not None else None

    def fetch_features(self, key: str) -> None:
        """Bring a feature cache entry from object storage into this node's cache, once."""
        local = self.features_dir / key
        if self.remote and not (local / FEATURES_MARKER).exists() and self.remote.exists(f"features/{key}/{FEATURES_MARKER}"):
            self.remote.download_dir(f"features/{key}", local)

    def publish_features(self, key: str) -> None:
        """Upload a feature cache entry computed here, so other nodes fetch instead of recomputing it."""
        if self.remote and not self.remote.exists(f"features/{key}/{FEATURES_MARKER}"):
            self.remote.upload_dir(self.features_dir / key, f"features/{key}", last=FEATURES_MARKER)

    @contextmanager
    def unit_lock(self, key: str) -> Iterator[None]:
        """Held while a unit trains: a second sweep asking for the same unit waits here, then finds it
        complete and reuses it. The node's lock file is dropped by the OS when its holder dies; with object
        storage a lease in the bucket also holds across nodes, and a dead holder's lease expires."""
        (self.root / "locks").mkdir(exist_ok=True)
        with FileLock(self.root / "locks" / f"{key}.lock"):
            if self.remote:
                with RemoteLease(self.remote, f"locks/{key}.json"):
                    yield
            else:
                yield

    @contextmanager
    def workspace(self, unit: Unit) -> Iterator[Path]:
        """A private folder to train ``unit`` in; renamed to ``units/<key>`` only if the block succeeds."""
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{unit.key}-{uuid.uuid4().hex[:6]}-", dir=self.root / "units"))
        (tmp / OWNER).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
        try:
            yield tmp
            final = self._local(unit.key)
            if final.exists():  # a concurrent duplicate finished first: its result is as good as ours
                return
            if self.remote:  # whole unit, marker last: a reader on another node never sees half of it
                self.remote.upload_dir(tmp, f"units/{unit.key}", last=UNIT_RECORD)
            os.replace(tmp, final)
        except Exception as exc:
            if _out_of_space(exc, tmp):
                raise StoreError(f"--store {self.location}: the disk of {self.root} is full (unit {unit.key}: "
                                 f"{exc}); its unfinished files were removed. Free space there (or pass --store "
                                 f"<folder on a larger disk>) and rerun: the unit trains again") from exc
            raise
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


def _out_of_space(exc: BaseException, where: Path) -> bool:
    """ENOSPC/EDQUOT anywhere in the exception's chain, or a full disk under ``where``: torch.save reports a
    full disk as a RuntimeError ("file write failed") without the errno."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in OUT_OF_SPACE:
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        return shutil.disk_usage(where).free < (1 << 20)
    except OSError:
        return False


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
