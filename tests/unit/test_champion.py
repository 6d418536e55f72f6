"""Champion/challenger: the rule, the scoring of a serving model, what the record, the email and
`status` say; the settings it reads."""

from __future__ import annotations

import numpy as np
import pytest

from core import contracts
from core.settings import BY_KEY, SettingError, read_context
from lambdas.logic.track_progress import ANNOUNCED, APPLIED
from pipeline.steps import champion
from pipeline.steps.dataset import format_pixels_csv
from pipeline.steps.evaluate import ModelRejected, NotBetterThanServing, evaluate
from tests.fakes.progress import start_run_record
from tests.unit.test_settings import CLUSTER_CONTEXT
from tests.unit.test_track_progress_logic import World

# -- the rule ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accuracy", "serving", "tolerance", "deploys"),
    [
        (0.80, 0.80, 0.0, True),  # as good: deploys
        (0.79, 0.80, 0.01, True),  # exactly the tolerance below: deploys
        (0.7899, 0.80, 0.01, False),  # one image more below: does not
        (0.81, 0.80, 0.0, True),
        (0.50, 0.80, 0.0, False),
        (0.50, 0.80, 1.0, True),  # tolerance 1: anything that passed the gate deploys
    ],
)
def test_a_challenger_deploys_when_at_least_the_serving_accuracy_less_the_tolerance(
    accuracy, serving, tolerance, deploys
):
    assert champion.challenger_may_deploy(accuracy, serving, tolerance) is deploys
    comparison = champion.Comparison(
        "mnist-classifier", accuracy, tolerance, champion_accuracy=serving, champion_model="m"
    )
    assert comparison.beats_champion is deploys
    assert comparison.as_json()["beats_champion"] is deploys


def test_no_serving_model_means_no_comparison_and_no_rejection():
    comparison = champion.Comparison("", 0.1, 0.01, note="per-run endpoints")
    assert not comparison.compared and comparison.beats_champion
    assert comparison.as_json()["champion_accuracy"] is None


def test_the_rejection_is_a_model_rejection_naming_the_reason_and_both_figures():
    rejection = champion.Comparison(
        "mnist-classifier", 0.7421, 0.01, champion_accuracy=0.7842, champion_model="mnist-x-model"
    ).rejection()
    assert isinstance(rejection, NotBetterThanServing) and isinstance(rejection, ModelRejected)
    assert str(rejection) == (
        "model rejected: not better than the serving model: accuracy 0.7421 against the serving"
        " model's 0.7842 (mnist-x-model) on the same test split, tolerance 0.0100; nothing was"
        " deployed"
    )


# -- scoring the serving model ----------------------------------------------------------------


def _near(axis: int, n: int = 1) -> np.ndarray:
    image = np.zeros((n, contracts.FEATURE_DIM), dtype=np.float32)
    image[:, axis] = 1.0
    return image


def test_the_serving_model_is_scored_by_nearest_centroid_then_the_challengers_own_mapping():
    # Two centroids; validation names cluster 0 digit 3 and cluster 1 digit 5 (2 votes to 1)
    centroids = np.concatenate([_near(0), _near(1)])
    validation = (
        np.concatenate([_near(0), _near(0), _near(1), _near(1), _near(1)]),
        [3, 3, 5, 5, 7],
    )
    # Test: 3 and 5 right; 7 (in cluster 1, named 5) and 1 (in cluster 0, named 3) wrong
    test = (np.concatenate([_near(0), _near(1), _near(1), _near(0)]), [3, 5, 7, 1])
    splits = {
        "validation": (validation[0], np.array(validation[1])),
        "test": (test[0], np.array(test[1])),
    }
    assert champion.score(centroids, splits) == 0.5
    # The same as evaluate() on the clusters nearest-centroid gives: one implementation
    clusters = {
        s: np.array([0, 0, 1, 1, 1]) if s == "validation" else np.array([0, 1, 1, 0])
        for s in splits
    }
    same = evaluate(
        clusters["validation"], splits["validation"][1], clusters["test"], splits["test"][1],
        k=2, min_accuracy=0.0,
    )  # fmt: skip
    assert same.accuracy == 0.5


def test_the_transform_inputs_are_read_back_as_preprocess_wrote_them():
    pixels = np.random.default_rng(0).random((7, contracts.FEATURE_DIM)).astype(np.float32)
    read = champion.read_pixels(format_pixels_csv(pixels), "runs/k/transform-input/test.csv")
    assert read.shape == pixels.shape
    np.testing.assert_allclose(read, pixels, atol=1e-6)  # CSV keeps six decimals


def test_pixels_that_are_not_images_are_refused_naming_the_file():
    with pytest.raises(ValueError, match="test.csv: rows of 3 pixels, not 784"):
        champion.read_pixels(b"0,1,0\n1,0,1\n", "test.csv")
    with pytest.raises(ValueError, match="test.csv: not CSV rows of pixels"):
        champion.read_pixels(b"0,x\n", "test.csv")


# -- the record, the email, status ------------------------------------------------------------


def test_a_challenger_not_better_ends_model_rejected_with_both_figures_in_the_email():
    world = World(start_run_record(run_settings={"k": 32}))
    assert world.send("pipeline_model_not_better") == ANNOUNCED
    assert world.record.outcome == contracts.STATUS_MODEL_REJECTED
    assert world.record.evaluation["champion_accuracy"] == pytest.approx(0.7842)
    [note] = world.notifier.published
    assert note.kind == contracts.KIND_MODEL_REJECTED
    assert note.subject == (
        "MNIST model rejected (mnist-d0520a385764): 74.21% vs the serving model's 78.42%"
    )
    assert "It passed the quality gate, but it is not better than the model" in note.message
    assert "Accuracy:  74.21% on the held-out test split" in note.message
    assert "Serving:   78.42%, the serving model on the same test split" in note.message
    assert "Tolerance: 1.00% (the stack's deploy_tolerance" in note.message
    assert (
        "Why:       not better than the serving model: accuracy 0.7421 against the serving"
        " model's 0.7842 on the same test split, tolerance 0.0100" in note.message
    )


def test_a_challenger_overtaken_at_the_recheck_gets_the_figures_of_that_moment():
    world = World(start_run_record())
    world.send("pipeline_model_evaluated")  # passed, better than what served then
    assert world.send("pipeline_failed_not_better_recheck") == ANNOUNCED
    assert world.record.outcome == contracts.STATUS_MODEL_REJECTED
    [note] = world.notifier.published
    assert "not better than the serving model" in note.subject
    assert "Serving:   a model deployed after this one was evaluated" in note.message
    assert "accuracy 0.7842 against the serving model's 0.8013" in note.message


def test_the_gate_email_is_unchanged_by_champion_challenger():
    world = World(start_run_record(run_settings={"k": 10}))
    assert world.send("pipeline_model_rejected") == ANNOUNCED
    [note] = world.notifier.published
    assert "under the 60.00% gate" in note.subject and "serving" not in note.message.lower()


def test_an_evaluation_event_rejecting_for_the_serving_model_without_its_figure_is_bad_input():
    from tests.conftest import load_event

    event = load_event("pipeline_model_not_better")
    del event["detail"]["champion_accuracy"]
    world = World(start_run_record())
    assert world.service.handle(event)["outcome"] not in (ANNOUNCED, APPLIED)
    assert world.record.outcome == ""


def test_status_shows_the_serving_models_figure():
    from mnistflow.status import describe_run

    world = World(start_run_record())
    world.send("pipeline_model_not_better")
    assert (
        "  serving   0.7842: the model the endpoint served, on the same test split (deploys at"
        " 0.7742 or more)" in describe_run(world.record)
    )


# -- settings ---------------------------------------------------------------------------------


def test_the_settings_default_to_a_one_point_tolerance_and_the_registry_on():
    settings = read_context(CLUSTER_CONTEXT)
    assert settings.deploy_tolerance == 0.01 and settings.model_registry is True
    assert BY_KEY["deploy_tolerance"].pipeline and BY_KEY["model_registry"].pipeline
    assert BY_KEY["model_registry"].kind.python_type is bool


@pytest.mark.parametrize(("raw", "value"), [(False, False), ("false", False), (" True ", True)])
def test_the_registry_flag_reads_json_booleans_and_cli_text(raw, value):
    assert read_context({**CLUSTER_CONTEXT, "model_registry": raw}).model_registry is value
    assert BY_KEY["model_registry"].kind.to_env(value) == ("true" if value else "false")


@pytest.mark.parametrize(
    ("key", "raw", "problem"),
    [
        ("model_registry", "yes", "must be true or false (got 'yes')"),
        ("model_registry", 1, "must be true or false (got 1)"),
        ("deploy_tolerance", 1.5, "must be from 0 to 1 (got 1.5)"),
    ],
)
def test_bad_champion_settings_name_their_key(key, raw, problem):
    with pytest.raises(SettingError) as raised:
        read_context({**CLUSTER_CONTEXT, key: raw})
    assert raised.value.key == key and problem in str(raised.value)


# -- reading the serving model ----------------------------------------------------------------


class _S3Refusing:
    """GetObject answers with the S3 error code given (botocore's ClientError, as S3 sends it)."""

    def __init__(self, code: str) -> None:
        self.code = code

    def get_object(self, **_):
        from botocore.exceptions import ClientError

        raise ClientError({"Error": {"Code": self.code, "Message": self.code}}, "GetObject")


SERVING = champion.Champion("mnist-classifier", "mnist-a-epc", "mnist-a-model", "s3://b/models/a")


def test_a_serving_artifact_that_is_gone_counts_as_no_serving_model():
    # S3's GetObject on a deleted key: NoSuchKey (S3 API reference, GetObject errors)
    with pytest.raises(champion.ChampionUnreadable, match="is gone"):
        champion.read_champion_centroids(_S3Refusing("NoSuchKey"), SERVING)


@pytest.mark.parametrize("code", ["AccessDenied", "SlowDown", "InternalError"])
def test_a_serving_artifact_that_cannot_be_read_now_fails_the_step_not_the_comparison(code):
    # Denied or S3 failing is not "no champion": a worse model would replace the serving one
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError):
        champion.read_champion_centroids(_S3Refusing(code), SERVING)
