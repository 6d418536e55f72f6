"""Champion/challenger on the same data: the model the stable endpoint serves (the champion)
scored on the new run's (the challenger's) test split.

What serves now is read from SageMaker: DescribeEndpoint -> its EndpointConfigName ->
DescribeEndpointConfig -> the variant's ModelName -> DescribeModel -> the container's
ModelDataUrl. The champion's centroids come from that artifact (kmeans_model.read_centroids);
the challenger's validation and test images are the batch transform's inputs under
runs/<key>/transform-input/, their labels under runs/<key>/labels/ (the preprocess step wrote
them). Each image goes to its nearest centroid, as k-means serving answers
(kmeans_model.closest_clusters), and the clusters are mapped to digits on validation and scored
on test by the same function that scores the challenger (evaluate.evaluate): one
implementation of "clusters -> digits -> accuracy".

The challenger may deploy when its accuracy >= the champion's - tolerance. No serving endpoint
(the stack's first model, or per-run endpoints) means nothing to compare with; a champion whose
artifact is gone or unreadable is said so and counts as no champion (the gate alone decides),
so a lost artifact never blocks every later run.

Standard library, numpy and botocore's errors only: the pipeline's steps embed this module.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass

import numpy as np
from botocore.exceptions import ClientError

from core.contracts import EVALUATION_FILE, FEATURE_DIM, MODEL_SUFFIX, resource_name
from pipeline.steps import kmeans_model
from pipeline.steps import sagemaker_jobs as jobs
from pipeline.steps.dataset import TRANSFORM_SPLITS, labels_csv, transform_input
from pipeline.steps.evaluate import NotBetterThanServing, evaluate, read_labels

# Accuracies are counts over the same test split: a difference smaller than this is rounding,
# never one image (a split holds far fewer than 10**9 images).
_ROUNDING = 1e-9
# Endpoint statuses with no model behind them to compare with (botocore's sagemaker model,
# EndpointStatus). Creating counts as serving: a model is on its way in (a concurrent run's).
NOT_SERVING = frozenset({"Failed", "Deleting", "OutOfService"})


class ChampionUnreadable(Exception):
    """The serving model's artifact is gone, or is not a k-means model of MNIST's images."""


@dataclass(frozen=True)
class Champion:
    """What the endpoint serves: its config, the model, the model's artifact."""

    endpoint_name: str
    endpoint_config: str
    model_name: str
    model_data_url: str


@dataclass(frozen=True)
class Comparison:
    """The challenger against the champion on the challenger's test split."""

    endpoint_name: str
    challenger_accuracy: float
    tolerance: float
    champion_accuracy: float | None = None  # None: nothing compared (`note` says why)
    champion_model: str = ""
    champion_model_data_url: str = ""
    note: str = ""

    @property
    def compared(self) -> bool:
        return self.champion_accuracy is not None

    @property
    def beats_champion(self) -> bool:
        """At least as accurate as the champion, less the tolerance (True when no champion)."""
        return not self.compared or challenger_may_deploy(
            self.challenger_accuracy, self.champion_accuracy, self.tolerance
        )

    def as_json(self) -> dict:
        return {**asdict(self), "compared": self.compared, "beats_champion": self.beats_champion}

    def rejection(self) -> NotBetterThanServing:
        return NotBetterThanServing(
            self.challenger_accuracy, self.champion_accuracy, self.tolerance, self.champion_model
        )


def challenger_may_deploy(accuracy: float, champion_accuracy: float, tolerance: float) -> bool:
    return accuracy >= champion_accuracy - tolerance - _ROUNDING


def serving_model(sm, endpoint_name: str) -> tuple[Champion | None, str]:
    """(what `endpoint_name` serves now, a plain sentence); (None, why) when nothing serves."""
    if not endpoint_name:
        return None, "per-run endpoints: no serving model to compare with"
    endpoint = jobs.describe_or_none(sm.describe_endpoint, EndpointName=endpoint_name)
    if endpoint is None:
        return None, f"no endpoint {endpoint_name} yet: this is its first model"
    if endpoint["EndpointStatus"] in NOT_SERVING:
        return None, (
            f"endpoint {endpoint_name} is {endpoint['EndpointStatus']}: no model serves there"
        )
    config_name = endpoint["EndpointConfigName"]
    config = sm.describe_endpoint_config(EndpointConfigName=config_name)
    model_name = config["ProductionVariants"][0]["ModelName"]
    model = jobs.describe_or_none(sm.describe_model, ModelName=model_name)
    if model is None:
        return None, f"the serving model {model_name} no longer exists in SageMaker"
    container = model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0]
    url = container.get("ModelDataUrl", "")
    champion = Champion(endpoint_name, config_name, model_name, url)
    return champion, f"endpoint {endpoint_name} serves {model_name} ({url})"


# S3's answers for an object or bucket that is not there (GetObject: NoSuchKey, NoSuchBucket;
# a HEAD-style 404 has no body and botocore names it by its status): the artifact is gone.
ARTIFACT_GONE = frozenset({"NoSuchKey", "NoSuchBucket", "404", "NotFound"})


def _object(uri: str) -> dict[str, str]:
    # steps.py imports this module; its URI reader is taken at call time (no import cycle).
    from pipeline.steps.steps import split_s3_uri

    bucket, key = split_s3_uri(uri)
    return {"Bucket": bucket, "Key": key}


def _read(s3, uri: str) -> bytes:
    return s3.get_object(**_object(uri))["Body"].read()


def read_champion_centroids(s3, champion: Champion) -> np.ndarray:
    """The serving model's centroids; ChampionUnreadable says why they cannot be had."""
    try:
        centroids = kmeans_model.read_centroids(_read(s3, champion.model_data_url))
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "error")
        if code not in ARTIFACT_GONE:
            # Denied, throttled past botocore's retries, S3 failing: not "no champion" (a worse
            # model would replace the serving one); the step fails and says why.
            raise
        raise ChampionUnreadable(
            f"the serving model's artifact {champion.model_data_url} is gone ({code})"
        ) from None
    except (ValueError, kmeans_model.ModelFormatError) as error:
        raise ChampionUnreadable(
            f"the serving model's artifact {champion.model_data_url} is not a k-means model"
            f" ({error})"
        ) from None
    if centroids.shape[1] != FEATURE_DIM:
        raise ChampionUnreadable(
            f"the serving model's centroids have {centroids.shape[1]} features, not"
            f" {FEATURE_DIM}: not a model of these images"
        )
    return centroids


def read_pixels(data: bytes, source: str) -> np.ndarray:
    """The transform input's images: one CSV line of FEATURE_DIM pixels each."""
    try:
        rows = np.loadtxt(io.BytesIO(data), delimiter=",", dtype=np.float32, ndmin=2)
    except ValueError as error:
        raise ValueError(f"{source}: not CSV rows of pixels ({error})") from None
    if rows.size and rows.shape[1] != FEATURE_DIM:
        raise ValueError(f"{source}: rows of {rows.shape[1]} pixels, not {FEATURE_DIM}")
    return rows.reshape(-1, FEATURE_DIM)


def read_split_images(s3, run_uri: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (images, labels)} of the run's validation and test splits."""
    splits = {}
    for split in TRANSFORM_SPLITS:
        images_uri = f"{run_uri}{transform_input(split)}"
        labels_uri = f"{run_uri}{labels_csv(split)}"
        images = read_pixels(_read(s3, images_uri), images_uri)
        labels = read_labels(_read(s3, labels_uri).decode("utf-8"), labels_uri)
        if len(images) != len(labels):
            raise ValueError(f"{images_uri}: {len(images)} images for {len(labels)} labels")
        splits[split] = (images, labels)
    return splits


def score(centroids: np.ndarray, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> float:
    """A k-means model's test accuracy: each image to its nearest centroid, clusters mapped to
    digits on validation, then scored on test (evaluate.evaluate: the challenger's own way)."""
    clusters = {
        split: kmeans_model.closest_clusters(centroids, images)[0]
        for split, (images, _) in splits.items()
    }
    result = evaluate(
        clusters["validation"],
        splits["validation"][1],
        clusters["test"],
        splits["test"][1],
        k=int(centroids.shape[0]),
        min_accuracy=0.0,
    )
    return result.accuracy


def compare(
    sm,
    s3,
    *,
    endpoint_name: str,
    run_uri: str,
    challenger_accuracy: float,
    tolerance: float,
) -> Comparison:
    """The challenger against whatever `endpoint_name` serves now."""
    base = {
        "endpoint_name": endpoint_name,
        "challenger_accuracy": challenger_accuracy,
        "tolerance": tolerance,
    }
    champion, note = serving_model(sm, endpoint_name)
    if champion is None:
        return Comparison(**base, note=note)
    found = {
        "champion_model": champion.model_name,
        "champion_model_data_url": champion.model_data_url,
    }
    try:
        centroids = read_champion_centroids(s3, champion)
    except ChampionUnreadable as error:
        print(f"champion/challenger: {error}; judged by the gate alone")
        return Comparison(**base, **found, note=f"{error}: compared with nothing")
    accuracy = score(centroids, read_split_images(s3, run_uri))
    verdict = (
        "at least as good, less the tolerance"
        if challenger_may_deploy(challenger_accuracy, accuracy, tolerance)
        else NotBetterThanServing.REASON
    )
    return Comparison(
        **base,
        **found,
        champion_accuracy=accuracy,
        note=f"{note}: {accuracy:.4f} on this test split; the challenger's"
        f" {challenger_accuracy:.4f} is {verdict}",
    )


def ensure_still_better(
    sm,
    s3,
    *,
    endpoint_name: str,
    run_uri: str,
    run_key: str,
    tolerance: float,
) -> Comparison:
    """The re-check right before the endpoint moves to this run's model: the challenger against
    what serves at this moment (another run may have deployed since this one was evaluated).

    Raises NotBetterThanServing (a ModelRejected, so the run ends MODEL_REJECTED with both
    figures in its error) when it is no longer good enough. The challenger's accuracy is the one
    evaluate wrote to runs/<key>/evaluation.json; a champion already scored there (the same
    artifact) is not scored again. The re-check is added to evaluation.json as `recheck`.
    """
    evaluation_uri = f"{run_uri}{EVALUATION_FILE}"
    evaluation = json.loads(_read(s3, evaluation_uri))
    accuracy = float(evaluation["accuracy"])
    champion, note = serving_model(sm, endpoint_name)
    if champion is not None and champion.model_name == resource_name(run_key, MODEL_SUFFIX):
        comparison = Comparison(
            endpoint_name, accuracy, tolerance, note=f"{note}: this run's own model already"
        )
    else:
        earlier = evaluation.get("champion") or {}
        if (
            champion is not None
            and earlier.get("champion_accuracy") is not None
            and earlier.get("champion_model_data_url") == champion.model_data_url
        ):
            comparison = Comparison(
                endpoint_name,
                accuracy,
                tolerance,
                champion_accuracy=float(earlier["champion_accuracy"]),
                champion_model=champion.model_name,
                champion_model_data_url=champion.model_data_url,
                note=f"{note}: the champion evaluate compared with, unchanged",
            )
        else:
            comparison = compare(
                sm,
                s3,
                endpoint_name=endpoint_name,
                run_uri=run_uri,
                challenger_accuracy=accuracy,
                tolerance=tolerance,
            )
    s3.put_object(
        **_object(evaluation_uri),
        Body=json.dumps({**evaluation, "recheck": comparison.as_json()}, indent=2).encode(),
        ContentType="application/json",
    )
    if not comparison.beats_champion:
        raise comparison.rejection()
    return comparison
