"""The compiled pipeline under kfp.local against the emulator, whose SageMaker now trains: the
model is real, the batch transform scores every test image, and the endpoint agrees with it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mnistflow.local.emulator import AwsEmulator
from pipeline.steps.dataset import format_pixels_csv, load_dataset
from pipeline.steps.kmeans_model import read_centroids
from tests.conftest import SAMPLE_DIR
from tests.integration.pipeline_harness import LOCAL_DATA_BUCKET, run_dataset

pytestmark = pytest.mark.integration

SAMPLE = SAMPLE_DIR / "mnist-sample.pkl.gz"
REQUEST_IMAGES = 100  # as `mnistflow predict` sends them


def _answers(runtime, endpoint: str, csv_lines: list[str]) -> list[dict]:
    answers = []
    for start in range(0, len(csv_lines), REQUEST_IMAGES):
        answer = runtime.invoke_endpoint(
            EndpointName=endpoint,
            ContentType="text/csv",
            Accept="application/json",
            Body="\n".join(csv_lines[start : start + REQUEST_IMAGES]),
        )
        answers += json.loads(answer["Body"].read())["predictions"]
    return answers


def test_the_sample_trains_a_real_model_whose_endpoint_agrees_with_the_batch_transform(tmp_path):
    with AwsEmulator() as emulator:
        # When the compiled pipeline runs on the sample
        run = run_dataset(emulator, SAMPLE, tmp_path)
        assert run.result.succeeded, run.result.error
        s3, runtime = emulator.client("s3"), emulator.client("sagemaker-runtime")

        def read(key: str) -> bytes:
            return s3.get_object(Bucket=LOCAL_DATA_BUCKET, Key=key)["Body"].read()

        prefix = f"runs/{run.run_key}/"
        # Then the training job wrote a k-means model in the built-in image's format
        job = run.inventory["training_job"]
        artifact = job["ModelArtifacts"]["S3ModelArtifacts"]
        assert artifact == (
            f"s3://{LOCAL_DATA_BUCKET}/{prefix}model/{run.run_key}-train/output/model.tar.gz"
        )
        k = int(job["HyperParameters"]["k"])
        centroids = read_centroids(read(artifact.removeprefix(f"s3://{LOCAL_DATA_BUCKET}/")))
        assert centroids.shape == (k, 784)
        # and the batch transform answered every test image, one line each
        test_lines = read(f"{prefix}transform-input/test.csv").decode().splitlines()
        transform_lines = read(f"{prefix}transform-output/test.csv.out").decode().splitlines()
        assert len(transform_lines) == len(test_lines) == 1000
        # and the endpoint answers the test split as the batch transform did, line for line
        endpoint = run.inventory["endpoint"]["EndpointName"]
        answers = _answers(runtime, endpoint, test_lines)
        assert [json.dumps(answer) for answer in answers] == transform_lines
        # and the model classifies: clusters named by their majority digit on validation
        splits = load_dataset(SAMPLE, source=str(SAMPLE)).splits
        validation = [
            int(a["closest_cluster"])
            for a in _answers(
                runtime, endpoint, format_pixels_csv(splits["validation"].x).decode().splitlines()
            )
        ]
        digit = [
            int(np.bincount(splits["validation"].y[np.equal(validation, c)], minlength=10).argmax())
            for c in range(k)
        ]
        test_labels = np.array(read(f"{prefix}labels/test.csv").decode().split(), dtype=int)
        predicted = [digit[int(json.loads(line)["closest_cluster"])] for line in transform_lines]
        accuracy = float(np.mean(np.equal(predicted, test_labels)))
        # as the evaluate step measured it (benchmarks/RESULTS.md: 0.739 at k=32, seed 0)
        evaluation = json.loads(read(f"{prefix}evaluation.json"))
        assert evaluation["accuracy"] == pytest.approx(accuracy)
        assert accuracy >= 0.7
