"""Running orchestrator commands as subprocesses at tiny sizes, reading what they left behind, and the
loopback servers (MLflow UI, model server, S3, Ray) some tests start."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd

TINY = [
    "--dataset", "synthetic", "--set", "data.synthetic_subjects=6", "--set", "data.synthetic_frames=12",
    "--set", "data.synthetic_size=40", "--set", "data.input_size=32", "--set", "stage0.epochs=1",
    "--set", "stage1.epochs=1", "--set", "stage2.epochs=1", "--set", "model.dim=32", "--set", "model.heads=4",
    "--set", "model.ff_dim=64", "--set", "stage0.batch_size=16", "--set", "stage1.batch_size=16",
    "--set", "stage2.batch_size=16", "--set", f"data.synthetic_root={Path(__file__).resolve().parents[1] / 'data' / 'synthetic'}",
]


def command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"orchestrator.{module}", *TINY, *args]


def run(cwd: Path, module: str, *args: str, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(command(module, *args), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


def runs(cwd: Path, experiment: str) -> pd.DataFrame:
    mlflow.set_tracking_uri(f"sqlite:///{cwd / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=[experiment], output_format="pandas")


def unit_runs(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["tags.unit_key"].notna()] if "tags.unit_key" in frame else frame.iloc[0:0]


def completed_units(store: Path, stage: str | None = None) -> list[str]:
    return sorted(p.parent.name for p in (store / "units").glob("*/unit.json") if stage is None or p.parent.name.startswith(stage))


def main_table(stdout: str) -> str:
    """A command's printed table without the identity diagnostics under it, whose "—" marks rows without a
    stage I rather than missing cells."""
    return stdout.split("### Identity diagnostics")[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, server: subprocess.Popen, timeout: float = 180) -> None:
    """Until ``url`` answers 200; fails at once with the server's output if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            output = server.stdout.read()[-3000:] if server.stdout else ""
            raise RuntimeError(f"the server exited with code {server.returncode}:\n{output}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"no answer at {url} within {timeout}s")
