"""The local k-means: the built-in image's hyperparameter checks, its training on the sample,
and its inference formats."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from mnistflow.local import kmeans, kmeans_serving, recordio
from pipeline.steps.dataset import format_pixels_csv, load_dataset
from pipeline.steps.kmeans_model import closest_clusters
from pipeline.steps.recordio import write_dense_tensor
from tests.conftest import SAMPLE_DIR

SEED_HYPERPARAMETERS = {"k": "10", "feature_dim": "784", "mini_batch_size": "500"}


@pytest.fixture(scope="module")
def sample():
    path = SAMPLE_DIR / "mnist-sample.pkl.gz"
    return load_dataset(path, source=str(path)).splits


def accuracy(centroids, splits) -> float:
    """Each cluster named after its majority digit on validation, scored on test."""
    val_clusters, _ = closest_clusters(centroids, splits["validation"].x)
    test_clusters, _ = closest_clusters(centroids, splits["test"].x)
    digit = np.zeros(len(centroids), dtype=int)
    for cluster in range(len(centroids)):
        labels = splits["validation"].y[val_clusters == cluster]
        digit[cluster] = np.bincount(labels, minlength=10).argmax() if len(labels) else -1
    return float((digit[test_clusters] == splits["test"].y).mean())


# -- hyperparameters ---------------------------------------------------------------------------


def test_the_pipelines_hyperparameters_take_the_images_defaults_for_the_rest():
    hp = kmeans.parse_hyperparameters(SEED_HYPERPARAMETERS)
    assert (hp.k, hp.feature_dim, hp.mini_batch_size) == (10, 784, 500)
    assert (hp.epochs, hp.init_method, hp.extra_center_factor) == (1, "random", 10)
    assert (hp.local_lloyd_init_method, hp.local_lloyd_max_iter) == ("kmeans++", 300)
    assert (hp.local_lloyd_tol, hp.half_life_time_size, hp.eval_metrics) == (0.0001, 0, ("msd",))


def test_every_documented_hyperparameter_and_the_sdks_extras_are_accepted():
    hp = kmeans.parse_hyperparameters(
        {
            **SEED_HYPERPARAMETERS,
            "epochs": "3",
            "init_method": "kmeans++",
            "extra_center_factor": "4",
            "local_lloyd_init_method": "random",
            "local_lloyd_max_iter": "50",
            "local_lloyd_tol": "0.01",
            "local_lloyd_num_trials": "auto",
            "half_life_time_size": "0",
            "eval_metrics": '["msd", "ssd"]',
            "force_dense": "True",  # the SageMaker SDK sends it with every k-means job
            "_tuning_objective_metric": "",  # automatic model tuning adds it
        }
    )
    assert (hp.epochs, hp.extra_center_factor, hp.eval_metrics) == (3, 4, ("msd", "ssd"))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            {"foo": "1"},
            "ClientError: Additional hyperparameters are not allowed ('foo' was unexpected) "
            "(caused by ValidationError)",
        ),
        (
            {"k": None},
            "ClientError: No value(s) were specified for 'k' which are required "
            "hyperparameter(s) (caused by ValidationError)",
        ),
        (
            {"k": "0"},
            "ClientError: The value '0' is not valid for the 'k' hyperparameter which expects "
            "one of the following: an integer greater than 0 (caused by ValidationError)",
        ),
        (
            {"mini_batch_size": "5.5"},
            "ClientError: The value '5.5' is not valid for the 'mini_batch_size' hyperparameter "
            "which expects one of the following: an integer greater than 0 "
            "(caused by ValidationError)",
        ),
        (
            {"init_method": "k-means++"},
            "ClientError: The value 'k-means++' is not valid for the 'init_method' "
            "hyperparameter which accepts one of the following: 'random', 'kmeans++' "
            "(caused by ValidationError)",
        ),
        (
            {"local_lloyd_tol": "2"},
            "ClientError: The value '2' is not valid for the 'local_lloyd_tol' hyperparameter "
            "which expects one of the following: a number between 0 and 1 "
            "(caused by ValidationError)",
        ),
    ],
    ids=["unknown", "missing", "zero", "not-integer", "enum", "range"],
)
def test_bad_hyperparameters_fail_in_sagemakers_words(change, reason):
    raw = {**SEED_HYPERPARAMETERS, **change}
    raw = {key: value for key, value in raw.items() if value is not None}
    with pytest.raises(kmeans.AlgorithmInputError) as failure:
        kmeans.parse_hyperparameters(raw)
    assert failure.value.failure_reason == reason


# -- training ----------------------------------------------------------------------------------


def test_training_on_the_sample_reaches_a_sane_accuracy_and_is_deterministic(sample):
    hp = kmeans.parse_hyperparameters(SEED_HYPERPARAMETERS)
    trained = kmeans.train(sample["train"].x, hp)
    assert trained.centroids.shape == (10, 784) and trained.centroids.dtype == np.float32
    # scikit-learn's KMeans scores 0.54-0.56 here (benchmarks/RESULTS.md)
    assert accuracy(trained.centroids, sample) >= 0.5
    assert set(trained.metrics) == {"train:msd"} and 30 < trained.metrics["train:msd"] < 60
    again = kmeans.train(sample["train"].x, hp)
    assert np.array_equal(again.centroids, trained.centroids)


def test_more_clusters_score_higher(sample):
    hp = kmeans.parse_hyperparameters({**SEED_HYPERPARAMETERS, "k": "32"})
    assert accuracy(kmeans.train(sample["train"].x, hp).centroids, sample) >= 0.65


def test_a_stop_ends_training_between_mini_batches(sample):
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 3:
            raise kmeans.TrainingStopped

    hp = kmeans.parse_hyperparameters(SEED_HYPERPARAMETERS)
    with pytest.raises(kmeans.TrainingStopped):
        kmeans.train(sample["train"].x, hp, check=check)


def test_data_that_cannot_train_k_clusters_is_a_client_error():
    hp = kmeans.parse_hyperparameters({"k": "10", "feature_dim": "3"})
    with pytest.raises(kmeans.AlgorithmInputError, match="only 4 records"):
        kmeans.train(np.zeros((4, 3)), hp)
    with pytest.raises(kmeans.AlgorithmInputError, match="have 5 features; feature_dim is 3"):
        kmeans.train(np.zeros((40, 5)), hp)
    with pytest.raises(kmeans.AlgorithmInputError, match="NaN"):
        kmeans.train(np.full((40, 3), np.nan), hp)


# -- inference formats -------------------------------------------------------------------------

CENTROIDS = np.array([[0.0, 0.0], [10.0, 10.0]], dtype=np.float32)


def _recordio_rows(*rows: list[float]) -> bytes:
    out = io.BytesIO()
    write_dense_tensor(out, np.asarray(rows, dtype=np.float32))
    return out.getvalue()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"1,1\n9,9\n", "text/csv"),
        (b"1,1\n9,9", "text/csv; label_size=0"),
        (
            json.dumps({"instances": [{"features": [1, 1]}, {"features": [9, 9]}]}),
            "application/json",
        ),
        (
            json.dumps(
                {
                    "instances": [
                        {"data": {"features": {"values": [1, 1]}}},
                        {"data": {"features": {"keys": [0, 1], "shape": [2], "values": [9, 9]}}},
                    ]
                }
            ),
            "application/json",
        ),
        (b'{"features": [1, 1]}\n{"features": [9, 9]}\n', "application/jsonlines"),
        (_recordio_rows([1, 1], [9, 9]), "application/x-recordio-protobuf"),
    ],
    ids=["csv", "csv-label-size", "json", "json-data-sparse", "jsonlines", "recordio"],
)
def test_every_request_format_gives_the_same_answer(body, content_type):
    answer, kind = kmeans_serving.invoke(
        CENTROIDS, body if isinstance(body, bytes) else body.encode(), content_type, None
    )
    assert kind == "application/json"
    assert json.loads(answer) == {
        "predictions": [
            {"closest_cluster": 0.0, "distance_to_cluster": float(np.float32(np.sqrt(2)))},
            {"closest_cluster": 1.0, "distance_to_cluster": float(np.float32(np.sqrt(2)))},
        ]
    }


def test_each_accept_type_is_written_as_the_image_writes_it():
    body, csv = b"1,1\n9,9", "text/csv"
    distance = repr(float(np.float32(np.sqrt(2))))
    lines, kind = kmeans_serving.invoke(CENTROIDS, body, csv, "application/jsonlines")
    assert kind == "application/jsonlines"
    assert lines.decode().splitlines() == [
        f'{{"closest_cluster": 0.0, "distance_to_cluster": {distance}}}',
        f'{{"closest_cluster": 1.0, "distance_to_cluster": {distance}}}',
    ]
    text, kind = kmeans_serving.invoke(CENTROIDS, body, csv, "text/csv")
    assert (text.decode(), kind) == (f"0.0,{distance}\n1.0,{distance}", "text/csv")
    protobuf, kind = kmeans_serving.invoke(CENTROIDS, body, csv, "application/x-recordio-protobuf")
    labels = [recordio.decode_record(p)[1] for p in recordio.split_records(protobuf)]
    assert [float(label["closest_cluster"][0]) for label in labels] == [0.0, 1.0]


@pytest.mark.parametrize(
    ("body", "content_type", "accept", "status", "says"),
    [
        (b"1,2,3", "text/csv", None, 400, "records have 3 features, the model was trained on 2"),
        (b"1,2\n3", "text/csv", None, 400, "line 2 has 1 values, line 1 has 2"),
        (b"1,x", "text/csv", None, 400, "line 1 is not comma-separated numbers"),
        (b"", "text/csv", None, 400, "no records"),
        (b'{"rows": []}', "application/json", None, 400, 'no "instances" list'),
        (
            b'{"instances": [{"data": {"features": {"keys": ["x"], "shape": [2], "values": [1]}}}'
            b"]}",
            "application/json",
            None,
            400,
            "not what the model reads",
        ),
        (b"1,2", "image/png", None, 415, "Content type image/png is not supported"),
        (b"1,2", "text/csv", "text/html", 406, "Accept type text/html is not supported"),
    ],
    ids=[
        "feature-count",
        "ragged",
        "not-numbers",
        "empty",
        "json-shape",
        "sparse-key",
        "type",
        "accept",
    ],
)
def test_a_request_the_model_cannot_answer_is_a_4xx_with_what_is_wrong(
    body, content_type, accept, status, says
):
    with pytest.raises(kmeans_serving.ModelError, match=says) as refused:
        kmeans_serving.invoke(CENTROIDS, body, content_type, accept)
    assert refused.value.status == status
    if status == 400:
        assert str(refused.value).startswith("unable to evaluate payload provided: ")


def test_the_test_csv_the_pipeline_writes_is_read_exactly(sample):
    x = sample["test"].x[:20]
    rows = kmeans_serving.parse_request(format_pixels_csv(x), "text/csv")
    assert np.allclose(rows, x, atol=5e-7)
