"""``python -m orchestrator.ui``: the MLflow UI on this machine, against the sweeps' tracking store.

A thin wrapper over ``mlflow server`` so the store (default ``sqlite:///<cwd>/mlflow.db``, where the
commands record) and a loopback-only address are the defaults; Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import os
import sys

from orchestrator.tracking import default_tracking_uri


def server_command(tracking_uri: str, host: str, port: int) -> list[str]:
    # One worker is plenty for one researcher and keeps the SQLite store to a single reader process.
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
            "--host", host, "--port", str(port), "--workers", "1"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.ui", description=__doc__)
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: sqlite:///<cwd>/mlflow.db)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    uri = args.tracking_uri or default_tracking_uri()
    print(f"MLflow UI for {uri} at http://{args.host}:{args.port}  (Ctrl-C stops it)", flush=True)
    command = server_command(uri, args.host, args.port)
    os.execv(command[0], command)  # become the server: Ctrl-C and kill reach it directly


if __name__ == "__main__":
    main()
