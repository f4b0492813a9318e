"""Names that cross layers, defined once: the files a stage writes and the orchestrator stores and logs, the
MLflow tags a sweep sets and the reports filter on, and the metric names the stages produce and the tables
read. A rename here reaches every writer and reader; a bare string elsewhere would silently drop an artifact
(every reader checks that a file exists before using it).

Imports nothing from the project: every layer (``clile_core``, ``reports``, ``orchestrator``) can import it.
"""

from __future__ import annotations

import re
from pathlib import Path

# ---- files in a stage's output folder (= a unit's store folder) --------------------------------------
BACKBONE_FILE = "backbone.pt"  # stage 0: the frozen feature extractor of stages I/II
STAGE1_FILE = "stage1.pt"  # stage I: the identity-label embeddings and their subjects
MODEL_JSON = "model.json"  # a servable model (stage 0, stage II): what to build and how to read images
WEIGHTS = "weights.pt"  # that model's trained weights
RESULT_JSON = "result.json"  # metrics, per-epoch history and config of a finished stage
PREDICTIONS_FILE = "predictions.npz"  # per split: probabilities, labels and manifest rows
UNIT_RECORD = "unit.json"  # written last by the orchestrator: the unit is complete
OWNER = ".owner.json"  # the store's note of which process trains in a unit's workspace
UNIT_FIGURES = "figures"  # folder of a unit's own figures (and, on a parent run, of the summary figures)
MLFLOW_MODEL = "mlflow_model"  # folder of a final unit's MLflow model
FEATURES_MARKER = "meta.json"  # written last into a feature-cache entry

# Where each file of a unit goes on its MLflow run (artifact folder). Not logged: the backbone (the MLflow
# model of every unit that predicts carries a copy) and the store's own bookkeeping.
UNIT_ARTIFACTS = {MODEL_JSON: "unit", RESULT_JSON: "unit", UNIT_RECORD: "unit", PREDICTIONS_FILE: "unit",
                  STAGE1_FILE: "unit", WEIGHTS: "model"}
NOT_LOGGED = frozenset({BACKBONE_FILE, OWNER})

# ---- a sweep's report (a folder and the parent run's artifacts) ---------------------------------------
TABLES_DIR = "tables"
FIGURE_FORMATS = ("png", "svg")
CURVES_FIGURE = "curves"
IDENTITY_FIGURE = "fig3_identity_embeddings"
AU_CORRELATION_FIGURE = "fig4_au_correlations"
F1_FIGURE = "f1_vs_paper"
SEEN_UNSEEN_FIGURE = "seen_vs_unseen"

TIMELINE = "timeline.json"  # in a Tune run's folder: each unit's trial start and end (bench/sweep_overhead.py)

# ---- MLflow tags ---------------------------------------------------------------------------------------
SWEEP_TAG = "sweep_key"  # on a parent run: which sweep (command + arguments) it records
DRIVER_TAG = "driver"  # host:pid:start-time of the command that owns a parent run
COMMAND_TAG = "command"
DATASET_TAG = "dataset"
CODE_VERSION_TAG = "code_version"
UNIT_TAG = "unit_key"  # on a unit's run
FOLD_TAG = "fold"
SEED_TAG = "seed"
STAGE_TAG = "stage"
BACKBONE_TAG = "backbone"
VARIANT_TAG = "variant"  # comma-separated variants the unit trains for
FINAL_FOR_TAG = "final_for"  # comma-separated table rows the unit answers
REUSED_FROM_TAG = "reused_from"  # the run that trained a unit this sweep reused
ERROR_TAG = "error"
RETRIES_TAG = "retries"

# ---- metrics -------------------------------------------------------------------------------------------
TEST, SEEN, VAL = "test", "seen", "val"  # splits: unseen test subjects, held-out frames of training subjects
AVG = "avg"  # the column of the mean over AUs


def f1_metric(split: str, column: str) -> str:
    """A split's F1 of one AU or of their average, e.g. ``test_f1_AU1``, ``seen_f1_avg``."""
    return f"{split}_f1_{column}"


TRAIN_PREFIX = "train_"  # what every loss-term metric starts with (the curves and the per-epoch logging select by it)


def train_metric(term: str) -> str:
    """A loss term's mean over an epoch's steps, e.g. ``train_loss`` (the weighted sum), ``train_contra``; every
    term a stage's ``loss_terms`` returns is logged and drawn under this name, with no list to extend."""
    return f"{TRAIN_PREFIX}{term}"


TRAIN_LOSS = train_metric("loss")
TEST_F1_AVG = f1_metric(TEST, AVG)
SEEN_F1_AVG = f1_metric(SEEN, AVG)
VAL_F1_AVG = f1_metric(VAL, AVG)
BEST_VAL_F1_AVG = f"best_{VAL_F1_AVG}"
TRAIN_SECONDS = "train_seconds"
ILE_SILHOUETTE_SUBJECT = "ile_silhouette_subject"
ILE_SILHOUETTE_AU = "ile_silhouette_au"
ID_PROBE_ACC = "id_probe_acc"
ID_PROBE_CHANCE = "id_probe_chance"


def row_metric(row: str) -> str:
    """The parent run's metric for a table row's mean test F1, e.g. ``f1_avg.CL-ILE``; characters MLflow
    refuses in metric names become ``_``."""
    return f"f1_{AVG}." + re.sub(r"[^\w\-. /:]", "_", row)


# ---- where commands record by default ------------------------------------------------------------------
TRACKING_DB = "mlflow.db"


def default_tracking_uri() -> str:
    """The SQLite store in the working directory that every command records to and every report reads."""
    return f"sqlite:///{Path(TRACKING_DB).resolve()}"
