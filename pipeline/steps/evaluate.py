"""How good is the model: k-means clusters mapped to digits, scored on held-out digits.

The batch transform scored the validation and the test images (one JSON line per image,
`closest_cluster` and `distance_to_cluster`, as the k-means algorithm writes them for
application/jsonlines). Each cluster is mapped to the digit most of its validation images
carry; the test images' clusters, mapped so, are the model's answers. From them: accuracy,
per-digit precision and recall, the confusion matrix, and each centroid as a 28x28 picture
labelled with its digit.

Standard library and numpy only: this module is embedded in the pipeline's evaluate step.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass

import numpy as np

from core.contracts import IMAGE_SIDE, NOT_BETTER_THAN_SERVING, NUM_CLASSES

UNMAPPED = -1  # a cluster no validation image fell into: its answers count as wrong


class EvaluationError(ValueError):
    """The transform's output does not line up with the inputs, or cannot be read."""


class ModelRejected(Exception):
    """The model scored under the quality gate: nothing is deployed."""

    def __init__(self, accuracy: float, min_accuracy: float):
        super().__init__(
            f"model rejected: accuracy {accuracy:.4f} is under the gate min_accuracy"
            f" {min_accuracy:.4f}; nothing was deployed"
        )
        self.accuracy = accuracy
        self.min_accuracy = min_accuracy


class NotBetterThanServing(ModelRejected):
    """The model passed the gate but is not better than the model the endpoint serves (its
    accuracy on the same test split, less the tolerance): nothing is deployed."""

    REASON = NOT_BETTER_THAN_SERVING

    def __init__(
        self, accuracy: float, champion_accuracy: float, tolerance: float, champion_model: str
    ):
        Exception.__init__(
            self,
            f"model rejected: {self.REASON}: accuracy {accuracy:.4f} against the serving model's"
            f" {champion_accuracy:.4f} ({champion_model}) on the same test split, tolerance"
            f" {tolerance:.4f}; nothing was deployed",
        )
        self.accuracy = accuracy
        self.champion_accuracy = champion_accuracy
        self.tolerance = tolerance
        self.champion_model = champion_model
        self.min_accuracy = None


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    min_accuracy: float
    passed: bool
    k: int
    mapping: list[int]  # cluster -> digit (UNMAPPED: none of validation fell there)
    precision: dict[str, float]  # per digit "0".."9"
    recall: dict[str, float]
    confusion: list[list[int]]  # rows: true digit, columns: predicted digit
    n_validation: int
    n_test: int

    @property
    def weakest_digits(self) -> list[int]:
        """The digits recognised least well: lowest recall first."""
        return sorted(range(NUM_CLASSES), key=lambda d: (self.recall[str(d)], d))[:3]

    def as_json(self) -> dict:
        return {**asdict(self), "weakest_digits": self.weakest_digits}


def read_clusters(text: str, expected_lines: int, source: str) -> np.ndarray:
    """The `closest_cluster` of each JSON line; an output that does not have one line per input
    line fails, naming the file."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) != expected_lines:
        raise EvaluationError(
            f"{source}: {len(lines)} lines for {expected_lines} inputs; the transform's output"
            " does not line up with its input"
        )
    clusters = np.empty(len(lines), dtype=np.int64)
    for number, line in enumerate(lines, start=1):
        try:
            value = json.loads(line)["closest_cluster"]
            clusters[number - 1] = int(value)
        except (ValueError, KeyError, TypeError) as error:
            raise EvaluationError(
                f"{source}: line {number} is not a k-means answer ({type(error).__name__})"
            ) from None
    return clusters


def read_labels(text: str, source: str) -> np.ndarray:
    try:
        labels = np.array([int(line) for line in text.split()], dtype=np.int64)
    except ValueError:
        raise EvaluationError(f"{source}: labels are not one integer a line") from None
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise EvaluationError(f"{source}: labels outside 0..{NUM_CLASSES - 1}")
    return labels


def cluster_digits(clusters: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Each cluster's majority digit among the images in it (ties: the smaller digit)."""
    counts = np.zeros((k, NUM_CLASSES), dtype=np.int64)
    np.add.at(counts, (clusters, labels), 1)
    mapping = counts.argmax(axis=1)
    mapping[counts.sum(axis=1) == 0] = UNMAPPED
    return mapping


def evaluate(
    validation_clusters: np.ndarray,
    validation_labels: np.ndarray,
    test_clusters: np.ndarray,
    test_labels: np.ndarray,
    *,
    k: int,
    min_accuracy: float,
) -> Evaluation:
    if validation_clusters.shape != validation_labels.shape:
        raise EvaluationError("validation: as many clusters as labels are needed")
    if test_clusters.shape != test_labels.shape:
        raise EvaluationError("test: as many clusters as labels are needed")
    for name, clusters in (("validation", validation_clusters), ("test", test_clusters)):
        if clusters.size and (clusters.min() < 0 or clusters.max() >= k):
            raise EvaluationError(f"{name}: a closest_cluster outside 0..{k - 1}")
    mapping = cluster_digits(validation_clusters, validation_labels, k)
    predicted = mapping[test_clusters]
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    answered = predicted != UNMAPPED
    np.add.at(confusion, (test_labels[answered], predicted[answered]), 1)
    correct = np.diag(confusion)
    per_true = np.bincount(test_labels, minlength=NUM_CLASSES)
    per_predicted = confusion.sum(axis=0)
    accuracy = float(correct.sum() / test_labels.size) if test_labels.size else 0.0
    return Evaluation(
        accuracy=accuracy,
        min_accuracy=float(min_accuracy),
        passed=accuracy >= min_accuracy,
        k=k,
        mapping=[int(d) for d in mapping],
        precision={
            str(d): float(correct[d] / per_predicted[d]) if per_predicted[d] else 0.0
            for d in range(NUM_CLASSES)
        },
        recall={
            str(d): float(correct[d] / per_true[d]) if per_true[d] else 0.0
            for d in range(NUM_CLASSES)
        },
        confusion=confusion.tolist(),
        n_validation=int(validation_labels.size),
        n_test=int(test_labels.size),
    )


def picture_svg(pixels: np.ndarray, cell: int = 4) -> str:
    """One 28x28 image (pixels in [0, 1]) as a grey SVG picture, white on black like MNIST."""
    side = IMAGE_SIDE * cell
    values = np.clip(np.asarray(pixels, dtype=np.float64), 0.0, 1.0)
    rects = []
    for position, value in enumerate(values[: IMAGE_SIDE * IMAGE_SIDE]):
        if value < 0.02:
            continue  # the background is the SVG's own black
        row, column = divmod(position, IMAGE_SIDE)
        grey = int(round(value * 255))
        rects.append(
            f'<rect x="{column * cell}" y="{row * cell}" width="{cell}" height="{cell}"'
            f' fill="rgb({grey},{grey},{grey})"/>'
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{side}" height="{side}">'
        f'<rect width="{side}" height="{side}" fill="black"/>{"".join(rects)}</svg>'
    )


def centroids_html(centroids: np.ndarray, mapping: list[int], accuracy: float) -> str:
    """Each centroid as a 28x28 grey picture (SVG), labelled with the digit it answers."""
    pictures = []
    for index, (centroid, digit) in enumerate(zip(centroids, mapping, strict=True)):
        label = "none" if digit == UNMAPPED else str(digit)
        pictures.append(
            f"<figure>{picture_svg(centroid)}"
            f"<figcaption>cluster {index}: digit {html.escape(label)}</figcaption></figure>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>k-means centroids</title>"
        "<style>body{font-family:sans-serif}figure{display:inline-block;margin:6px;"
        "text-align:center}</style></head><body>"
        f"<h1>k-means centroids (test accuracy {accuracy:.1%})</h1>"
        + "".join(pictures)
        + "</body></html>"
    )
