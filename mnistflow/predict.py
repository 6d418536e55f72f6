"""The workshop's last step as a command: send digits to the endpoint as CSV, read k-means' answer.

SageMaker's k-means takes `text/csv`, one image a line, and answers JSON:
{"predictions": [{"closest_cluster": 3.0, "distance_to_cluster": 5.2}, ...]}, one per line.
A cluster is not a digit: the run's evaluate step mapped each cluster to the digit most of its
validation images carry, in runs/<run key>/evaluation.json, which is found from the endpoint
itself (endpoint -> endpoint config -> model -> its artifact's run key -> models/<key>/, where
the deploy step keeps it, or runs/<key>/).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.contracts import (
    EVALUATION_FILE,
    FEATURE_DIM,
    RUNS_PREFIX,
    SERVING_MODELS_PREFIX,
    run_key_from_name,
)
from core.sagemaker_events import ENDPOINT
from pipeline.steps.dataset import DatasetError, format_pixels_csv, load_dataset
from pipeline.steps.sagemaker_jobs import describe_or_none

SAMPLE_DATASET = Path(__file__).parent / "data" / "mnist-sample.npz"
MAX_SAMPLE = 100  # one request; far below the endpoint's 6 MB payload limit
PIXEL_MAX_INT = 255


class PredictError(Exception):
    """Something the user can fix: the message says what and where."""


@dataclass(frozen=True)
class Prediction:
    cluster: int
    distance: float
    label: int | None = None
    digit: int | None = None  # the cluster's digit, when the run's evaluation is found


def digit_mapping(sagemaker, s3, endpoint: str) -> list[int] | None:
    """The cluster -> digit mapping of the run whose model the endpoint serves; None when it
    cannot be found (a model trained elsewhere, or before evaluation existed)."""
    try:
        config = sagemaker.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
        variants = sagemaker.describe_endpoint_config(EndpointConfigName=config)[
            "ProductionVariants"
        ]
        model = sagemaker.describe_model(ModelName=variants[0]["ModelName"])
        artifacts = model["PrimaryContainer"]["ModelDataUrl"]
    except (sagemaker.exceptions.ClientError, KeyError, IndexError):
        return None
    bucket, _, key = artifacts.removeprefix("s3://").partition("/")
    parts = key.split("/")
    prefixes = (RUNS_PREFIX, SERVING_MODELS_PREFIX)
    if len(parts) < 2 or f"{parts[0]}/" not in prefixes or not run_key_from_name(parts[1]):
        return None
    # The deploy step keeps the served model's evaluation next to its promoted artifact
    # (models/ never expires); runs/ has it too, until its lifecycle expiry.
    for prefix in (SERVING_MODELS_PREFIX, RUNS_PREFIX):
        try:
            body = s3.get_object(Bucket=bucket, Key=f"{prefix}{parts[1]}/{EVALUATION_FILE}")
            mapping = json.loads(body["Body"].read())["mapping"]
        except (s3.exceptions.ClientError, ValueError, KeyError):
            continue
        return [int(digit) for digit in mapping]
    return None


def load_images(path: Path) -> np.ndarray:
    """Images from a .npy array ((28, 28), (784,) or (n, 784)) or a CSV of 784 values a line.

    Pixels are floats in [0, 1] or integers 0-255 (then scaled).
    """
    try:
        if path.suffix == ".npy":
            raw = np.load(path, allow_pickle=False)
        else:
            text = path.read_text().strip()
            if not text:
                raise PredictError(f"{path}: the file is empty")
            raw = np.array([[float(v) for v in line.split(",")] for line in text.splitlines()])
    except (OSError, UnicodeDecodeError) as error:
        raise PredictError(f"{path}: cannot read it ({error})") from None
    except ValueError as error:
        raise PredictError(f"{path}: not an image of numbers ({error})") from None
    if raw.dtype.kind not in "iuf":
        raise PredictError(f"{path}: pixels must be numbers, not {raw.dtype}")
    if raw.size % FEATURE_DIM or raw.size == 0:
        raise PredictError(
            f"{path}: {raw.size} values is not a whole number of {FEATURE_DIM}-pixel images "
            f"(28 x 28)"
        )
    images = raw.reshape(-1, FEATURE_DIM).astype(np.float64)
    if not np.all(np.isfinite(images)):
        raise PredictError(f"{path}: pixels must be finite numbers")
    if raw.dtype.kind in "iu" or images.max() > 1:
        if images.min() < 0 or images.max() > PIXEL_MAX_INT:
            raise PredictError(f"{path}: pixels must be in [0, 1] or 0-255")
        images = images / PIXEL_MAX_INT
    elif images.min() < 0:
        raise PredictError(f"{path}: pixels must be in [0, 1] or 0-255")
    return images.astype(np.float32)


def sample_images(count: int, dataset: Path = SAMPLE_DATASET) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` labelled digits of the sample's test split."""
    if not 1 <= count <= MAX_SAMPLE:
        raise PredictError(f"--sample must be between 1 and {MAX_SAMPLE}, got {count}")
    try:
        test = load_dataset(dataset, source=str(dataset)).splits["test"]
    except DatasetError as error:
        raise PredictError(str(error)) from None
    return test.x[:count], test.y[:count]


def parse_kmeans_answer(body: bytes, expected: int) -> list[tuple[int, float]]:
    try:
        predictions = json.loads(body)["predictions"]
        answers = [
            (int(p["closest_cluster"]), float(p["distance_to_cluster"])) for p in predictions
        ]
    except (ValueError, KeyError, TypeError) as error:
        raise PredictError(f"the endpoint's answer is not k-means JSON: {body[:200]!r}") from error
    if len(answers) != expected or any(math.isnan(d) for _, d in answers):
        raise PredictError(f"sent {expected} images, the endpoint answered {len(answers)}")
    return answers


def predict(
    sagemaker,
    runtime,
    endpoint: str,
    images: np.ndarray,
    labels: np.ndarray | None = None,
    mapping: list[int] | None = None,
) -> list[Prediction]:
    """Checks the endpoint is in service, sends the images in one CSV request, pairs answers."""
    # Only SageMaker's not-found answer is "not found"; access, credentials and throttling
    # errors go up (the CLI says which).
    described = describe_or_none(sagemaker.describe_endpoint, EndpointName=endpoint)
    if described is None:
        raise PredictError(f"endpoint {endpoint!r} was not found in {sagemaker.meta.region_name}")
    status = described[ENDPOINT.status_field]
    if status not in ENDPOINT.done:
        raise PredictError(f"endpoint {endpoint!r} is {status}, not {' or '.join(ENDPOINT.done)}")
    answer = runtime.invoke_endpoint(
        EndpointName=endpoint,
        ContentType="text/csv",
        Accept="application/json",
        Body=format_pixels_csv(images),
    )
    pairs = parse_kmeans_answer(answer["Body"].read(), len(images))
    return [
        Prediction(
            cluster,
            distance,
            None if labels is None else int(labels[i]),
            _digit(mapping, cluster),
        )
        for i, (cluster, distance) in enumerate(pairs)
    ]


def _digit(mapping: list[int] | None, cluster: int) -> int | None:
    if mapping is None or not 0 <= cluster < len(mapping) or mapping[cluster] < 0:
        return None
    return mapping[cluster]


def describe_predictions(predictions: list[Prediction]) -> str:
    lines = []
    for i, p in enumerate(predictions, start=1):
        digit = "?" if p.digit is None else str(p.digit)
        line = f"image {i}: digit {digit}  (cluster {p.cluster}, distance {p.distance:.3f})"
        if p.label is not None:
            verdict = "" if p.digit is None else ("  right" if p.digit == p.label else "  wrong")
            line += f"  true digit {p.label}{verdict}"
        lines.append(line)
    labelled = [p for p in predictions if p.label is not None and p.digit is not None]
    if labelled:
        right = sum(p.digit == p.label for p in labelled)
        lines.append(
            f"accuracy on these {len(labelled)}: {right}/{len(labelled)}"
            f" ({right / len(labelled):.0%})"
        )
    if any(p.digit is None for p in predictions):
        lines.append(
            "(no digit: the run's evaluation, which maps clusters to digits, was not found)"
        )
    return "\n".join(lines)
