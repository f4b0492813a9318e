import logging

from clile_core.log import get_logger


def test_lines_carry_the_component_and_go_to_the_current_stderr(capsys):
    get_logger("features").info("cache hit %s", "x.npy")
    get_logger("sweep").warning("unit A0 failed")
    get_logger("run").error("%s", ValueError("config.yaml: key 'model.dim': 30 is not divisible by 4"))
    assert capsys.readouterr().err.splitlines() == [
        "[features] cache hit x.npy", "[sweep] unit A0 failed",
        "error: config.yaml: key 'model.dim': 30 is not divisible by 4",  # a refusal: no component, 'error:'
    ]


def test_only_the_clile_tree_is_configured(capsys):
    get_logger("run")
    # the root logger stays at WARNING: nothing printed (not "mlflow.…": MLflow configures its own tree on import)
    logging.getLogger("another_library.module").info("not ours")
    assert logging.getLogger("clile").propagate is False
    assert capsys.readouterr().err == ""
