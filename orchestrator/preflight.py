"""Checks run in the driver before anything starts, so a setup mistake fails in seconds with one message
instead of after retries (Ray, MLflow) or after stage 0 has trained."""

from __future__ import annotations

import argparse
import socket
import sqlite3
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd

from clile_core.config import DataConfig
from clile_core.data.folds import split_fold

CONNECT_TIMEOUT_S = 5.0


class SetupError(ValueError):
    """Something outside the configuration (cluster, tracking store, artifact store) is not usable."""


def at_least(low: int | float, kind: type = int):
    """An argparse type: ``kind`` parsed and refused below ``low`` (argparse then names the flag)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum {low}")
        return value

    return parse


def check_address(address: str) -> None:
    """A HOST:PORT (or ray://HOST:PORT) address must accept a connection; Ray itself retries for minutes."""
    if address == "auto":
        return  # Ray resolves it from this machine's running cluster and fails at once when there is none
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise SetupError(f"--address {address!r}: expected HOST:PORT (the head's GCS port, 6379 by default) or 'auto'")
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise SetupError(f"--address {address}: no Ray cluster answers there ({exc}); start one with "
                         f"`ray start --head --port={port}` on {host}, or leave --address out to run locally") from None


def check_tracking(uri: str) -> None:
    """An SQLite tracking store must be writable: MLflow would retry for minutes, then print a traceback."""
    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri.removeprefix("sqlite:///"))
    hint = "pass --tracking-uri sqlite:///<writable folder>/mlflow.db"
    if not path.parent.is_dir():
        raise SetupError(f"--tracking-uri {uri}: folder {path.parent} does not exist; create it or {hint}")
    try:
        conn = sqlite3.connect(path, timeout=CONNECT_TIMEOUT_S)
        try:
            conn.execute("BEGIN IMMEDIATE")  # takes the write lock: fails on a read-only file or folder
            conn.rollback()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise SetupError(f"--tracking-uri {uri}: cannot write the database {path} ({exc}); {hint}") from None


def check_splits(manifest: pd.DataFrame, data: DataConfig, folds: list[int]) -> None:
    """Every fold must leave training, validation and test frames, or a stage fails after stage 0 trained."""
    for fold in folds:
        split = split_fold(manifest.reset_index(drop=True), data.dataset, fold, val_fraction=data.val_fraction,
                           seen_fraction=data.seen_fraction, seed=data.split_seed)
        empty = [role for role in ("train", "val", "test") if len(getattr(split, role)) == 0]
        if empty:
            raise SetupError(f"fold {fold}: no {' or '.join(empty)} frames with data.val_fraction={data.val_fraction} "
                             f"and data.seen_fraction={data.seen_fraction}; lower them or add subjects/frames")
