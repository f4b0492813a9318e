"""``python -m orchestrator.ui``: the MLflow UI on this machine, against the sweeps' tracking store.

A thin wrapper over ``mlflow server`` so the store (default ``sqlite:///<cwd>/mlflow.db``, where the
commands record) and a loopback-only address are the defaults; Ctrl-C stops it. It prints each
experiment's address in MLflow's model-training view (the runs table): MLflow 3 otherwise opens an
experiment on its GenAI overview (traces, an assistant), which has nothing to show for these sweeps.
"""

from __future__ import annotations

import argparse
import os
import sys

from mlflow import MlflowClient

from clile_core.log import get_logger
from clile_core.names import default_tracking_uri

RUNS_VIEW = "workflowType=machine_learning"  # the query that opens MLflow 3.17's "Model training" view

log = get_logger("ui")


def experiment_url(base: str, experiment_id: str) -> str:
    return f"{base}/#/experiments/{experiment_id}?{RUNS_VIEW}"


def experiment_links(tracking_uri: str, base: str) -> list[str]:
    """One line per experiment with runs (name, then the address of its runs table), newest first."""
    client = MlflowClient(tracking_uri)
    experiments = client.search_experiments(order_by=["last_update_time DESC"])
    return [f"  {e.name}: {experiment_url(base, e.experiment_id)}" for e in experiments
            if client.search_runs([e.experiment_id], max_results=1)]


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
    base = f"http://{args.host}:{args.port}"
    links = experiment_links(uri, base)
    log.info(f"MLflow UI for {uri} at {base}  (Ctrl-C stops it)")
    log.info("experiments (runs table):\n" + "\n".join(links) if links else "no runs recorded yet")
    command = server_command(uri, args.host, args.port)
    os.execv(command[0], command)  # become the server: Ctrl-C and kill reach it directly


if __name__ == "__main__":
    main()
