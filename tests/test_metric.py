"""The copy_accuracy metric, loaded the way users load it: evaluate.load on the module folder."""

import evaluate
import pytest
from conftest import REPO


@pytest.fixture(scope="module")
def metric():
    return evaluate.load(str(REPO / "metrics" / "copy_accuracy"))


def test_token_id_lists(metric):
    out = metric.compute(predictions=[[5, 6, 7], [1, 2, 3]], references=[[5, 6, 7], [1, 2, 4]])
    assert out == {"exact_match": 0.5, "token_accuracy": pytest.approx(5 / 6)}


def test_strings_compare_characters(metric):
    out = metric.compute(predictions=["d7ba71", "abcdef"], references=["d7ba7e", "abcdef"])
    assert out["exact_match"] == 0.5
    assert out["token_accuracy"] == pytest.approx(11 / 12)


def test_short_prediction_counts_missing_positions_wrong(metric):
    out = metric.compute(predictions=[[1, 2]], references=[[1, 2, 3, 4]])
    assert out == {"exact_match": 0.0, "token_accuracy": 0.5}


def test_relative_path_from_repo_root(monkeypatch):
    monkeypatch.chdir(REPO)
    out = evaluate.load("metrics/copy_accuracy").compute(predictions=[[1]], references=[[1]])
    assert out == {"exact_match": 1.0, "token_accuracy": 1.0}


def test_mismatched_lengths_fail(metric):
    with pytest.raises(ValueError):
        metric.compute(predictions=[[1, 2]], references=[[1, 2], [3, 4]])


def test_the_space_app_loads_its_own_script_not_the_hub_metric(tmp_path, monkeypatch):
    """In a Space the script is renamed after the Space (push-metric); app.py must load that file, since
    evaluate.load("copy_accuracy") resolves to evaluate-metric/copy_accuracy on the Hub."""
    import runpy
    import shutil

    import evaluate.utils

    space = tmp_path / "space"
    space.mkdir()
    shutil.copy(REPO / "metrics" / "copy_accuracy" / "copy_accuracy.py", space / "my_copy_metric.py")
    shutil.copy(REPO / "metrics" / "copy_accuracy" / "app.py", space / "app.py")
    shown = []
    monkeypatch.setattr(evaluate.utils, "launch_gradio_widget", shown.append)
    runpy.run_path(str(space / "app.py"))
    [module] = shown
    assert module.compute(predictions=[[1, 2]], references=[[1, 2]])["exact_match"] == 1.0
