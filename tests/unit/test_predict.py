"""`predict`: digits as CSV to the endpoint, k-means' JSON answer read back (moto, in process)."""

import json

import boto3
import numpy as np
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sagemakerruntime.models import sagemakerruntime_backends

from mnistflow.predict import (
    PredictError,
    describe_predictions,
    digit_mapping,
    load_images,
    predict,
    sample_images,
)

REGION = "us-east-1"
ENDPOINT = "mnist-0123456789ab-endpoint"


@pytest.fixture
def clients():
    with mock_aws():
        sm = boto3.client("sagemaker", region_name=REGION)
        sm.create_model(
            ModelName="m",
            PrimaryContainer={"Image": "kmeans:1", "ModelDataUrl": "s3://b/m.tar.gz"},
            ExecutionRoleArn=f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:role/r",
        )
        sm.create_endpoint_config(
            EndpointConfigName="c",
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": "m",
                    "InitialInstanceCount": 1,
                    "InstanceType": "ml.m5.large",
                }
            ],
        )
        sm.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName="c")
        yield sm, boto3.client("sagemaker-runtime", region_name=REGION)


def _queue_kmeans_answer(predictions):
    """What SageMaker's k-means returns for text/csv input, queued in moto."""
    body = json.dumps({"predictions": predictions})
    backend = sagemakerruntime_backends[DEFAULT_ACCOUNT_ID][REGION]
    backend.results_queue.append((body, "application/json", "AllTraffic", ""))


def test_labelled_samples_get_their_cluster_and_distance_next_to_the_true_label(clients):
    # Given three labelled digits and the answers k-means gives for them
    images, labels = sample_images(3)
    _queue_kmeans_answer(
        [
            {"closest_cluster": 7.0, "distance_to_cluster": 5.25},
            {"closest_cluster": 2.0, "distance_to_cluster": 6.5},
            {"closest_cluster": 1.0, "distance_to_cluster": 4.0},
        ]
    )
    # When they are sent to the endpoint
    mapping = [9, 8, 7, 6, 5, 4, 3, int(labels[0]), 1, 0]  # cluster 7 reads as the first's digit
    predictions = predict(*clients, ENDPOINT, images, labels, mapping)
    # Then each answer is paired with its image and label, and read as its cluster's digit
    assert [(p.cluster, p.distance) for p in predictions] == [(7, 5.25), (2, 6.5), (1, 4.0)]
    assert [p.label for p in predictions] == [int(v) for v in labels]
    assert [p.digit for p in predictions] == [int(labels[0]), 7, 8]
    described = describe_predictions(predictions).splitlines()
    assert described[0] == (
        f"image 1: digit {int(labels[0])}  (cluster 7, distance 5.250)"
        f"  true digit {int(labels[0])}  right"
    )
    right = sum(p.digit == p.label for p in predictions)
    assert described[-1] == f"accuracy on these 3: {right}/3 ({right / 3:.0%})"


def test_without_the_runs_evaluation_the_cluster_is_shown_and_the_digit_is_not(clients):
    images, labels = sample_images(1)
    _queue_kmeans_answer([{"closest_cluster": 7.0, "distance_to_cluster": 5.25}])
    [prediction] = predict(*clients, ENDPOINT, images, labels)
    assert prediction.digit is None
    text = describe_predictions([prediction])
    assert text.startswith("image 1: digit ?  (cluster 7, distance 5.250)")
    assert "evaluation, which maps clusters to digits, was not found" in text


def test_an_image_file_in_0_255_is_scaled_and_sent_as_one_csv_line(clients, tmp_path):
    image = tmp_path / "digit.csv"
    image.write_text(",".join(["0"] * 783 + ["255"]))
    x = load_images(image)
    assert x.shape == (1, 784) and x[0, -1] == 1.0 and x.dtype == np.float32
    _queue_kmeans_answer([{"closest_cluster": 4, "distance_to_cluster": 1.5}])
    [prediction] = predict(*clients, ENDPOINT, x)
    assert (prediction.cluster, prediction.label) == (4, None)


def test_an_unknown_endpoint_is_named_in_a_clear_error(clients):
    with pytest.raises(PredictError, match="endpoint 'mnist-nope' was not found in us-east-1"):
        predict(*clients, "mnist-nope", sample_images(1)[0])


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "the file is empty"),
        ("1,2,three", "not an image of numbers"),
        (",".join(["0"] * 700), "700 values is not a whole number of 784-pixel images"),
        (",".join(["0"] * 783 + ["300"]), r"pixels must be in \[0, 1\] or 0-255"),
        (",".join(["0"] * 783 + ["-0.5"]), r"pixels must be in \[0, 1\] or 0-255"),
        (",".join(["0"] * 783 + ["nan"]), "pixels must be finite numbers"),
    ],
)
def test_a_malformed_image_is_refused_with_what_is_wrong(tmp_path, content, problem):
    image = tmp_path / "bad.csv"
    image.write_text(content)
    with pytest.raises(PredictError, match=problem):
        load_images(image)


def test_an_answer_that_is_not_kmeans_json_is_reported(clients):
    backend = sagemakerruntime_backends[DEFAULT_ACCOUNT_ID][REGION]
    backend.results_queue.append(("<html>oops</html>", "text/html", "AllTraffic", ""))
    with pytest.raises(PredictError, match="not k-means JSON"):
        predict(*clients, ENDPOINT, sample_images(1)[0])


def test_sample_counts_outside_the_limit_are_refused():
    with pytest.raises(PredictError, match="--sample must be between 1 and 100"):
        sample_images(0)


@pytest.mark.parametrize("kept_under", ["models", "runs"])
def test_the_digits_come_from_the_served_runs_evaluation_wherever_it_is_kept(kept_under):
    # Given the stable endpoint serving a model made from its promoted artifact, and the run's
    # evaluation kept next to it (the deploy step's copy) or only under runs/ (not yet expired)
    key = "mnist-0123456789ab"
    with mock_aws():
        sm, s3 = boto3.client("sagemaker", region_name=REGION), boto3.client("s3", REGION)
        s3.create_bucket(Bucket="mnistflow-data")
        mapping = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
        s3.put_object(
            Bucket="mnistflow-data",
            Key=f"{kept_under}/{key}/evaluation.json",
            Body=json.dumps({"mapping": mapping}).encode(),
        )
        sm.create_model(
            ModelName=f"{key}-model",
            PrimaryContainer={
                "Image": "kmeans:1",
                "ModelDataUrl": f"s3://mnistflow-data/models/{key}/model.tar.gz",
            },
            ExecutionRoleArn=f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:role/r",
        )
        sm.create_endpoint_config(
            EndpointConfigName=f"{key}-epc",
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": f"{key}-model",
                    "InitialInstanceCount": 1,
                    "InstanceType": "ml.m5.large",
                }
            ],
        )
        sm.create_endpoint(EndpointName="mnist-classifier", EndpointConfigName=f"{key}-epc")
        # Then predict reads the clusters' digits from it
        assert digit_mapping(sm, s3, "mnist-classifier") == mapping
