"""The k-means image's inference side: the request formats it reads and the answers it writes.

One function, `invoke`, is what the image's `/invocations` does; the local SageMaker calls it for
an endpoint's InvokeEndpoint and for each request of a batch transform, as SageMaker does with
the real image, so the two answer alike line for line.

Formats (SageMaker developer guide: "Common data formats for inference" and "K-Means Response
Formats"):

- in: `text/csv` (one record a line, `label_size=0`), `application/json`
  (`{"instances": [{"features": [...]}]}` or `{"instances": [{"data": {"features":
  {"values": [...]}}}]}`, sparse with `keys` and `shape`), `application/jsonlines` (one
  `{"features": [...]}` a line) and `application/x-recordio-protobuf`;
- out, by Accept: `application/json` (the default) `{"predictions": [{"closest_cluster": 1.0,
  "distance_to_cluster": 3.0}, ...]}`, `application/jsonlines` (one such object a line),
  `text/csv` (`1.0,3.0` a line) and `application/x-recordio-protobuf` (a Record per answer whose
  label map holds `closest_cluster` and `distance_to_cluster` as float32 tensors).
  `closest_cluster` is a float, as the image writes it.

A request the model cannot read is answered 400 (415 for a content type it does not take, 406 for
an Accept it cannot write), as a container answers: SageMaker turns that into a ModelError.
The image's messages beyond "unable to evaluate payload provided" (its answer in the one public
k-means example) are not public; the details after it are ours.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np

from mnistflow.local import recordio
from pipeline.steps.kmeans_model import closest_clusters

CSV = "text/csv"
JSON = "application/json"
JSONLINES = "application/jsonlines"
RECORDIO = "application/x-recordio-protobuf"
CONTENT_TYPES = (CSV, JSON, JSONLINES, RECORDIO)
ACCEPTS = (JSON, JSONLINES, CSV, RECORDIO)
DEFAULT_ACCEPT = JSON
UNREADABLE = "unable to evaluate payload provided"


class ModelError(Exception):
    """The container's own error answer: an HTTP status and a message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def media_type(header: str | None) -> tuple[str, dict[str, str]]:
    """`text/csv; label_size=0` -> ("text/csv", {"label_size": "0"})."""
    kind, *params = (header or "").split(";")
    parsed = {}
    for param in params:
        name, _, value = param.partition("=")
        parsed[name.strip().lower()] = value.strip().strip('"')
    return kind.strip().lower(), parsed


def _bad(detail: str) -> ModelError:
    return ModelError(400, f"{UNREADABLE}: {detail}")


def _csv_rows(text: str) -> np.ndarray:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return np.empty((0, 0))
    try:  # numpy's C parser; a ragged or non-numeric line falls back to the precise loop
        rows = np.loadtxt(io.StringIO("\n".join(lines)), delimiter=",", ndmin=2, dtype=float)
        if len(rows) == len(lines):
            return rows
    except ValueError:
        pass
    width = None
    parsed = []
    for number, line in enumerate(lines, start=1):
        values = line.split(",")
        try:
            row = [float(value) for value in values]
        except ValueError:
            raise _bad(f"line {number} is not comma-separated numbers") from None
        if width is not None and len(row) != width:
            raise _bad(f"line {number} has {len(row)} values, line 1 has {width}")
        width = len(row)
        parsed.append(row)
    return np.asarray(parsed, dtype=float)


def _instance_features(instance: object, where: str) -> list[float]:
    if not isinstance(instance, dict):
        raise _bad(f"{where} is not an object with features")
    if "features" in instance:
        return instance["features"]
    data = instance.get("data")
    features = data.get("features") if isinstance(data, dict) else None
    if not isinstance(features, dict) or "values" not in features:
        raise _bad(f'{where} has neither "features" nor "data": {{"features": {{"values"}}}}')
    if "keys" not in features:
        return features["values"]
    shape, keys, values = features.get("shape"), features["keys"], features["values"]
    if not (isinstance(shape, list) and len(shape) == 1 and len(keys) == len(values)):
        raise _bad(f"{where} is sparse: it needs one key per value and a one-number shape")
    dense = [0.0] * int(shape[0])
    for key, value in zip(keys, values, strict=True):
        if not 0 <= int(key) < len(dense):
            raise _bad(f"{where} has key {key} outside its shape {shape}")
        dense[int(key)] = value
    return dense


def _rows(instances: list, where: str) -> np.ndarray:
    rows = [_instance_features(item, f"{where} {i}") for i, item in enumerate(instances, 1)]
    widths = {len(row) if isinstance(row, list) else -1 for row in rows}
    if -1 in widths or len(widths) > 1:
        raise _bad(f"the {where}s do not all hold lists of the same number of features")
    try:
        return np.asarray(rows, dtype=float).reshape(len(rows), -1)
    except (TypeError, ValueError):
        raise _bad(f"a {where}'s features are not all numbers") from None


def parse_request(body: bytes, content_type: str | None) -> np.ndarray:
    """The request's records as a (records, features) float array."""
    kind, params = media_type(content_type)
    if kind not in CONTENT_TYPES:
        raise ModelError(415, f"Content type {kind or '(none)'} is not supported by k-means")
    try:
        if kind == RECORDIO:
            return recordio.read_features(body).astype(float)
        text = body.decode("utf-8")
    except (UnicodeDecodeError, recordio.RecordIOError) as error:
        raise _bad(str(error)) from None
    if kind == CSV:
        if params.get("label_size", "0") != "0":
            raise _bad("k-means takes no labels at inference (label_size must be 0)")
        return _csv_rows(text)
    try:
        if kind == JSONLINES:
            lines = [json.loads(line) for line in text.splitlines() if line.strip()]
            return _rows(lines, "line") if lines else np.empty((0, 0))
        document = json.loads(text)
    except (TypeError, ValueError) as error:  # not JSON, or a key or shape not a number
        raise _bad(f"the body is not JSON the model reads ({error})") from None
    instances = document.get("instances") if isinstance(document, dict) else None
    if not isinstance(instances, list):
        raise _bad('the JSON body has no "instances" list')
    try:
        return _rows(instances, "instance") if instances else np.empty((0, 0))
    except (TypeError, ValueError) as error:
        raise _bad(f"the instances are not what the model reads ({error})") from None


def _recordio_answers(clusters: np.ndarray, distances: np.ndarray) -> bytes:
    return b"".join(
        recordio.frame(
            recordio.encode_label_record(
                {"closest_cluster": float(cluster), "distance_to_cluster": float(distance)}
            )
        )
        for cluster, distance in zip(clusters, distances, strict=True)
    )


def format_answers(
    clusters: np.ndarray, distances: np.ndarray, accept: str | None
) -> tuple[bytes, str]:
    """The answer body for these predictions, and its content type."""
    kind, _ = media_type(accept)
    if kind in ("", "*/*"):
        kind = DEFAULT_ACCEPT
    if kind not in ACCEPTS:
        raise ModelError(406, f"Accept type {kind} is not supported by k-means")
    pairs = [
        {"closest_cluster": float(c), "distance_to_cluster": float(np.float32(d))}
        for c, d in zip(clusters, distances, strict=True)
    ]
    if kind == JSON:
        return json.dumps({"predictions": pairs}).encode(), JSON
    if kind == JSONLINES:
        return "\n".join(json.dumps(p) for p in pairs).encode(), JSONLINES
    if kind == CSV:
        lines = (f"{p['closest_cluster']!r},{p['distance_to_cluster']!r}" for p in pairs)
        return "\n".join(lines).encode(), CSV
    return _recordio_answers(clusters, distances), RECORDIO


def invoke(
    centroids: np.ndarray, body: bytes, content_type: str | None, accept: str | None
) -> tuple[bytes, str]:
    """What the k-means image answers to one request; ModelError when it refuses it."""
    kind, _ = media_type(accept)
    if kind not in ("", "*/*", *ACCEPTS):  # refused before reading the body, as a server does
        raise ModelError(406, f"Accept type {kind} is not supported by k-means")
    x = parse_request(body, content_type)
    if len(x) == 0:
        raise _bad("no records")
    feature_dim = centroids.shape[1]
    if x.shape[1] != feature_dim:
        raise _bad(f"records have {x.shape[1]} features, the model was trained on {feature_dim}")
    if not all(math.isfinite(v) for v in (x.min(), x.max())):
        raise _bad("a feature is NaN or infinite")
    clusters, distances = closest_clusters(centroids, x)
    return format_answers(clusters, distances, accept)
