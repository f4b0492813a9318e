"""The producers of metric names agree with ``clile_core.names``, which the reports and MLflow views read by."""

from __future__ import annotations

import numpy as np
from mlflow.utils.validation import validate_param_and_metric_name

from clile_core import diagnostics, names
from clile_core.metrics import f1_table


def test_f1_metrics_are_named_as_the_reports_read_them():
    produced = f1_table(np.array([0.5, 0.25]), ["AU1", "AU12"], prefix=f"{names.TEST}_")
    assert produced == {names.f1_metric(names.TEST, "AU1"): 50.0, names.f1_metric(names.TEST, "AU12"): 25.0,
                        names.TEST_F1_AVG: 37.5}
    assert names.TEST_F1_AVG == "test_f1_avg" and names.SEEN_F1_AVG == "seen_f1_avg"  # logged by earlier sweeps too


def test_diagnostics_are_named_as_the_identity_table_reads_them():
    rng = np.random.default_rng(0)
    assert set(diagnostics.ile_silhouettes(rng.normal(size=(3, 4, 8)))) == {names.ILE_SILHOUETTE_SUBJECT,
                                                                           names.ILE_SILHOUETTE_AU}
    x, subjects = rng.normal(size=(12, 4)), np.repeat([0, 1, 2], 4)
    assert set(diagnostics.identity_probe(x, subjects, x, subjects)) == {names.ID_PROBE_ACC, names.ID_PROBE_CHANCE}


def test_row_metric_is_a_valid_mlflow_name():
    assert names.row_metric("CL-ILE") == "f1_avg.CL-ILE"
    assert names.row_metric("paper defaults (τ=2)") == "f1_avg.paper defaults _τ_2_"  # MLflow refuses ( = )
    assert validate_param_and_metric_name(names.row_metric("paper defaults (τ=2)"))


def test_every_unit_file_is_either_logged_or_deliberately_not():
    assert not names.NOT_LOGGED & names.UNIT_ARTIFACTS.keys()
    assert names.BACKBONE_FILE in names.NOT_LOGGED  # carried by each predicting unit's MLflow model instead
    assert set(names.UNIT_ARTIFACTS.values()) == {"unit", "model"}
