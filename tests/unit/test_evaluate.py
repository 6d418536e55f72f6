"""The evaluate step's arithmetic: clusters mapped to digits on validation, scored on test."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.steps.evaluate import (
    UNMAPPED,
    EvaluationError,
    ModelRejected,
    centroids_html,
    cluster_digits,
    evaluate,
    read_clusters,
    read_labels,
)


def _lines(clusters):
    return "".join(
        json.dumps({"closest_cluster": float(c), "distance_to_cluster": 1.5}) + "\n"
        for c in clusters
    )


def test_each_cluster_takes_its_majority_digit_on_validation():
    clusters = np.array([0, 0, 0, 1, 1, 2])
    labels = np.array([7, 7, 1, 3, 3, 5])
    assert cluster_digits(clusters, labels, k=4).tolist() == [7, 3, 5, UNMAPPED]


def test_accuracy_precision_recall_and_the_confusion_matrix():
    # Given clusters 0->1, 1->2 on validation, and a test split where one 2 lands in cluster 0
    validation = (np.array([0, 0, 1, 1]), np.array([1, 1, 2, 2]))
    test = (np.array([0, 1, 0, 1]), np.array([1, 2, 2, 2]))
    result = evaluate(*validation, *test, k=2, min_accuracy=0.5)
    # Then 3 of 4 are right; digit 2's recall is 2/3, digit 1's precision 1/2
    assert result.accuracy == 0.75 and result.passed
    assert result.recall["2"] == pytest.approx(2 / 3) and result.recall["1"] == 1.0
    assert result.precision["1"] == 0.5 and result.precision["2"] == 1.0
    assert result.confusion[2][1] == 1 and result.confusion[2][2] == 2
    assert sum(map(sum, result.confusion)) == 4
    assert result.mapping == [1, 2] and result.as_json()["weakest_digits"][0] == 0


def test_an_answer_from_a_cluster_no_validation_image_fell_into_counts_as_wrong():
    result = evaluate(
        np.array([0]), np.array([4]), np.array([0, 1]), np.array([4, 4]), k=2, min_accuracy=0.9
    )
    assert result.accuracy == 0.5 and not result.passed and result.mapping == [4, UNMAPPED]


def test_labels_that_are_noise_score_near_chance():
    # A dataset whose labels are noise: nothing to learn, so the gate will reject it
    rng = np.random.default_rng(7)
    clusters = rng.integers(0, 10, 4000)
    labels = rng.integers(0, 10, 4000)
    result = evaluate(clusters[:2000], labels[:2000], clusters[2000:], labels[2000:], k=10,
                      min_accuracy=0.6)  # fmt: skip
    assert result.accuracy < 0.2 and not result.passed


def test_a_transform_output_that_does_not_line_up_fails_naming_the_file():
    with pytest.raises(EvaluationError, match=r"s3://b/out/test\.csv\.out: 2 lines for 3 inputs"):
        read_clusters(_lines([1, 2]), 3, "s3://b/out/test.csv.out")


@pytest.mark.parametrize(
    "line", ["not json", '{"distance_to_cluster": 1}', '{"closest_cluster": "x"}']
)
def test_a_line_that_is_not_a_kmeans_answer_fails_naming_the_file_and_line(line):
    with pytest.raises(EvaluationError, match=r"o\.out: line 2 is not a k-means answer"):
        read_clusters(_lines([1]) + line + "\n", 2, "o.out")


def test_a_cluster_outside_k_fails():
    with pytest.raises(EvaluationError, match="closest_cluster outside 0..1"):
        evaluate(np.array([5]), np.array([1]), np.array([0]), np.array([1]), k=2, min_accuracy=0)


def test_labels_must_be_digits():
    assert read_labels("3\n4\n", "l.csv").tolist() == [3, 4]
    with pytest.raises(EvaluationError, match="l.csv: labels outside 0..9"):
        read_labels("3\n12\n", "l.csv")


def test_the_rejection_names_the_accuracy_and_the_gate():
    error = ModelRejected(0.48, 0.6)
    assert str(error) == (
        "model rejected: accuracy 0.4800 is under the gate min_accuracy 0.6000; nothing was"
        " deployed"
    )


def test_each_centroid_is_drawn_and_labelled_with_its_digit():
    centroids = np.zeros((3, 784), dtype=np.float32)
    centroids[0, 0] = 1.0
    page = centroids_html(centroids, [7, UNMAPPED, 2], accuracy=0.81)
    assert page.count("<svg") == 3 and "test accuracy 81.0%" in page
    assert "cluster 0: digit 7" in page and "cluster 1: digit none" in page
    assert 'fill="rgb(255,255,255)"' in page
