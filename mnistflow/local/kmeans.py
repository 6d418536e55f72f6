"""The work of SageMaker's built-in k-means image, in numpy: its hyperparameters and training.

The algorithm has the shape AWS documents for its k-means (SageMaker developer guide, "How
K-Means Clustering Works" and "K-Means Hyperparameters"):

1. A streaming pass ("web-scale" mini-batch k-means) over the training data, `epochs` times,
   `mini_batch_size` records at a time, keeping `k * extra_center_factor` centers, seeded from
   the first mini-batch (`init_method`: random records, or k-means++) and moved towards each
   batch's records with a per-center rate of 1 / (records it has seen), decayed by
   `half_life_time_size`.
2. Finalizing: the extra centers, weighted by the records each took, are reduced to `k` with a
   local Lloyd's k-means (`local_lloyd_init_method`, `_max_iter`, `_tol`, `_num_trials`; the
   trial with the least weighted loss wins).

Deterministic for given data, hyperparameters and seed. The real image's `auto` values are not
published: here `extra_center_factor=auto` is 10 (what the image's log reports for k=10) and
`local_lloyd_num_trials=auto` is 10.

Hyperparameters are checked as the image checks them (a JSON schema, its errors reworded by the
first-party algorithms' `ConfigValidator`, aws/sagemaker-rl-container
`src/vw-serving/src/vw_serving/sagemaker/integration.py`), and a failure reads as SageMaker
shows it: `ClientError: <message> (caused by ValidationError)`. The k-means schema's own text is
not public, so the value descriptions are ours, in that validator's phrasing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

AUTO = "auto"
AUTO_EXTRA_CENTER_FACTOR = 10
AUTO_LOCAL_LLOYD_NUM_TRIALS = 10
DEFAULT_SEED = 0
EVAL_METRICS = ("msd", "ssd")
INIT_METHODS = ("random", "kmeans++")
# Accepted and ignored: the image's own settings (its default-input.json, as its log prints it)
# and what the SageMaker SDK sends with every k-means job.
IGNORED_HYPERPARAMETERS = frozenset(
    {
        "force_dense",
        "_disable_wait_to_read",
        "_enable_profiler",
        "_kvstore",
        "_log_level",
        "_num_gpus",
        "_num_kv_servers",
        "_num_slices",
        "_tuning_objective_metric",
    }
)
REQUIRED_HYPERPARAMETERS = ("feature_dim", "k")
_WHOLE_NUMBER = re.compile(r"[0-9]+")


class AlgorithmInputError(ValueError):
    """Something in the job's configuration or data that the customer can fix (a ClientError).

    `str()` is the message; `failure_reason` is what SageMaker's FailureReason would say.
    """

    def __init__(self, message: str, caused_by: str = "ValidationError") -> None:
        super().__init__(message)
        self.caused_by = caused_by

    @property
    def failure_reason(self) -> str:
        return f"ClientError: {self} (caused by {self.caused_by})"


class TrainingStopped(Exception):
    """Raised by the `check` callback to end training early (a stop or the runtime limit)."""


@dataclass(frozen=True)
class Hyperparameters:
    k: int
    feature_dim: int
    mini_batch_size: int = 5000
    epochs: int = 1
    init_method: str = "random"
    extra_center_factor: int = AUTO_EXTRA_CENTER_FACTOR
    local_lloyd_init_method: str = "kmeans++"
    local_lloyd_max_iter: int = 300
    local_lloyd_tol: float = 0.0001
    local_lloyd_num_trials: int = AUTO_LOCAL_LLOYD_NUM_TRIALS
    half_life_time_size: int = 0
    eval_metrics: tuple[str, ...] = ("msd",)


def _invalid(value: str, key: str, expects: str) -> AlgorithmInputError:
    return AlgorithmInputError(
        f"The value '{value}' is not valid for the '{key}' hyperparameter which expects one of "
        f"the following: {expects}"
    )


def _positive(key: str, value: str) -> int:
    if not _WHOLE_NUMBER.fullmatch(value) or int(value) < 1:
        raise _invalid(value, key, "an integer greater than 0")
    return int(value)


def _non_negative(key: str, value: str) -> int:
    if not _WHOLE_NUMBER.fullmatch(value):
        raise _invalid(value, key, "an integer greater than or equal to 0")
    return int(value)


def _positive_or_auto(auto: int) -> Callable[[str, str], int]:
    def parse(key: str, value: str) -> int:
        if value == AUTO:
            return auto
        if not _WHOLE_NUMBER.fullmatch(value) or int(value) < 1:
            raise _invalid(value, key, f"an integer greater than 0; or '{AUTO}'")
        return int(value)

    return parse


def _unit_interval(key: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not 0.0 <= number <= 1.0:  # NaN fails too
        raise _invalid(value, key, "a number between 0 and 1")
    return number


def _one_of(choices: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(key: str, value: str) -> str:
        if value not in choices:
            listed = ", ".join(f"'{choice}'" for choice in choices)
            raise AlgorithmInputError(
                f"The value '{value}' is not valid for the '{key}' hyperparameter which accepts "
                f"one of the following: {listed}"
            )
        return value

    return parse


def _eval_metrics(key: str, value: str) -> tuple[str, ...]:
    try:
        metrics = json.loads(value)
    except ValueError:
        metrics = [part.strip() for part in value.split(",")]  # the SDK's older spelling
    if isinstance(metrics, str):
        metrics = [metrics]
    if (
        not isinstance(metrics, list)
        or not metrics
        or any(metric not in EVAL_METRICS for metric in metrics)
    ):
        raise _invalid(value, key, 'a JSON list of "msd" and/or "ssd"')
    return tuple(dict.fromkeys(metrics))


_PARSERS: dict[str, Callable[[str, str], object]] = {
    "k": _positive,
    "feature_dim": _positive,
    "mini_batch_size": _positive,
    "epochs": _positive,
    "init_method": _one_of(INIT_METHODS),
    "extra_center_factor": _positive_or_auto(AUTO_EXTRA_CENTER_FACTOR),
    "local_lloyd_init_method": _one_of(INIT_METHODS),
    "local_lloyd_max_iter": _positive,
    "local_lloyd_tol": _unit_interval,
    "local_lloyd_num_trials": _positive_or_auto(AUTO_LOCAL_LLOYD_NUM_TRIALS),
    "half_life_time_size": _non_negative,
    "eval_metrics": _eval_metrics,
}
KNOWN_HYPERPARAMETERS = frozenset(_PARSERS) | IGNORED_HYPERPARAMETERS


def parse_hyperparameters(raw: Mapping[str, str]) -> Hyperparameters:
    """The job's HyperParameters (a map of strings), checked; AlgorithmInputError otherwise."""
    unexpected = sorted(set(raw) - KNOWN_HYPERPARAMETERS)
    if unexpected:  # jsonschema's additionalProperties, with 'properties' made 'hyperparameters'
        listed = ", ".join(repr(key) for key in unexpected)
        verb = "was" if len(unexpected) == 1 else "were"
        raise AlgorithmInputError(
            f"Additional hyperparameters are not allowed ({listed} {verb} unexpected)"
        )
    missing = [key for key in REQUIRED_HYPERPARAMETERS if key not in raw]
    if missing:
        listed = ", ".join(f"'{key}'" for key in missing)
        raise AlgorithmInputError(
            f"No value(s) were specified for {listed} which are required hyperparameter(s)"
        )
    values = {key: _PARSERS[key](key, str(raw[key])) for key in sorted(raw) if key in _PARSERS}
    return Hyperparameters(**values)


@dataclass(frozen=True)
class Trained:
    centroids: np.ndarray  # (k, feature_dim) float32
    metrics: dict[str, float] = field(default_factory=dict)  # train:msd, train:ssd as asked


def _squared_distances(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(rows, centers) squared Euclidean distances, float64, never negative."""
    squared = (
        np.einsum("ij,ij->i", x, x)[:, None] - 2.0 * x @ centers.T + (centers * centers).sum(1)
    )
    return np.maximum(squared, 0.0)


def _one_hot(nearest: np.ndarray, count: int) -> np.ndarray:
    """(rows, count) membership matrix: sums per center become one matrix product."""
    members = np.zeros((len(nearest), count))
    members[np.arange(len(nearest)), nearest] = 1.0
    return members


def _seed_centers(
    points: np.ndarray, weights: np.ndarray, count: int, method: str, rng: np.random.Generator
) -> np.ndarray:
    """`count` rows of `points` as initial centers: weighted random or weighted k-means++."""
    probabilities = weights / weights.sum()
    if method == "random":
        chosen = rng.choice(len(points), size=count, replace=False, p=probabilities)
        return points[chosen].copy()
    centers = [points[rng.choice(len(points), p=probabilities)]]
    closest = _squared_distances(points, np.asarray(centers))[:, 0]
    for _ in range(1, count):
        scores = weights * closest
        total = scores.sum()
        if total <= 0:  # every point sits on a center already: take any unused one
            index = int(rng.choice(np.flatnonzero(closest == closest.max())))
        else:
            index = int(rng.choice(len(points), p=scores / total))
        centers.append(points[index])
        closest = np.minimum(closest, _squared_distances(points, points[index][None, :])[:, 0])
    return np.asarray(centers)


def _lloyd(
    points: np.ndarray,
    weights: np.ndarray,
    centers: np.ndarray,
    max_iter: int,
    tol: float,
    check: Callable[[], None],
) -> tuple[np.ndarray, float]:
    """Weighted Lloyd's iterations until the loss improves by less than `tol` (relative)."""
    previous = np.inf
    loss = np.inf
    for _ in range(max_iter):
        check()
        squared = _squared_distances(points, centers)
        nearest = squared.argmin(axis=1)
        loss = float((weights * squared[np.arange(len(points)), nearest]).sum())
        members = _one_hot(nearest, len(centers)) * weights[:, None]
        mass, sums = members.sum(axis=0), members.T @ points
        taken = mass > 0
        centers = centers.copy()
        centers[taken] = sums[taken] / mass[taken, None]  # an empty cluster keeps its center
        if previous - loss <= tol * max(previous, np.finfo(float).tiny) and previous != np.inf:
            break
        previous = loss
    squared = _squared_distances(points, centers)
    loss = float((weights * squared.min(axis=1)).sum())
    return centers, loss


def _batches(n: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def train(
    x: np.ndarray,
    hp: Hyperparameters,
    *,
    seed: int = DEFAULT_SEED,
    check: Callable[[], None] = lambda: None,
) -> Trained:
    """Trains on the rows of `x` ((records, feature_dim)); `check()` is called between steps
    and may raise TrainingStopped."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if x.ndim != 2 or x.shape[1] != hp.feature_dim:
        raise AlgorithmInputError(
            f"The train channel's records have {x.shape[-1] if x.ndim == 2 else 0} features; "
            f"feature_dim is {hp.feature_dim}",
            caused_by="ValueError",
        )
    if n < hp.k:
        raise AlgorithmInputError(
            f"k is {hp.k}, and the train channel holds only {n} records: k-means needs at least "
            f"k records",
            caused_by="ValueError",
        )
    if not np.isfinite(x).all():
        raise AlgorithmInputError(
            "Unable to read data channel 'train'. Found missing (NaN) or infinite values. "
            "Please remove them from the input data.",
            caused_by="ValueError",
        )
    rng = np.random.default_rng(seed)
    batches = _batches(n, hp.mini_batch_size)
    extra = min(n, hp.k * hp.extra_center_factor)

    # 1. The streaming pass, seeded from the first mini-batch (or as many as `extra` needs).
    seed_rows = x[: max(batches[0].stop, extra)]
    centers = _seed_centers(seed_rows, np.ones(len(seed_rows)), extra, hp.init_method, rng)
    counts = np.zeros(extra)
    for _ in range(hp.epochs):
        for batch in batches:
            check()
            rows = x[batch]
            if hp.half_life_time_size:
                counts *= 0.5 ** (len(rows) / hp.half_life_time_size)
            members = _one_hot(_squared_distances(rows, centers).argmin(axis=1), extra)
            taken, sums = members.sum(axis=0), members.T @ rows
            counts += taken
            moved = taken > 0
            centers[moved] += (sums[moved] - taken[moved, None] * centers[moved]) / counts[
                moved, None
            ]

    # 2. Finalizing: the weighted extra centers reduced to k by local Lloyd's trials.
    weights = counts.copy()
    if np.count_nonzero(weights) < hp.k:  # too few centers took records: weigh all alike
        weights[weights == 0] = 1.0
    keep = weights > 0
    points, weights = centers[keep], weights[keep]
    best, best_loss = None, np.inf
    for _ in range(hp.local_lloyd_num_trials):
        start = _seed_centers(points, weights, hp.k, hp.local_lloyd_init_method, rng)
        found, loss = _lloyd(
            points, weights, start, hp.local_lloyd_max_iter, hp.local_lloyd_tol, check
        )
        if loss < best_loss:
            best, best_loss = found, loss

    centroids = best.astype(np.float32)
    closest = np.concatenate(
        [_squared_distances(x[b], centroids.astype(np.float64)).min(axis=1) for b in batches]
    )
    metrics = {"msd": float(closest.mean()), "ssd": float(closest.sum())}
    return Trained(centroids, {f"train:{m}": metrics[m] for m in hp.eval_metrics})
