"""The plain-text emails the functions send (start-run, track-progress): subject under 100
ASCII characters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core import contracts, sagemaker_events
from core import run_record as rr
from core.run_record import DatasetRef, RunRecord
from lambdas.logic.progress_events import ProgressEvent

SUBJECT_MAX_CHARS = 99  # SNS: "less than 100 characters", ASCII, no line breaks


@dataclass(frozen=True)
class Notification:
    kind: str
    subject: str
    message: str


def subject_line(text: str) -> str:
    """SNS subjects must be printable ASCII and under 100 characters."""
    ascii_text = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in " ".join(text.split()))
    if len(ascii_text) <= SUBJECT_MAX_CHARS:
        return ascii_text
    return ascii_text[: SUBJECT_MAX_CHARS - 3] + "..."


def data_rejected(run_key: str, dataset: DatasetRef, reason: str) -> Notification:
    message = "\n".join(
        [
            "An upload to the MNIST data bucket was not accepted, so no pipeline run was started.",
            "",
            f"Object:   {dataset.uri}",
            f"Version:  {dataset.version or '(unversioned) ETag ' + dataset.etag}",
            f"Run key:  {run_key}",
            f"Reason:   {reason}",
            "",
            "What to do: upload an MNIST dataset (.pkl.gz or .npz) under incoming/ again.",
        ]
    )
    return Notification(
        contracts.KIND_DATA_REJECTED,
        subject_line(f"MNIST upload rejected ({run_key}): {reason}"),
        message,
    )


def settings_line(run_settings: Mapping[str, Any], overridden: tuple[str, ...] = ()) -> str:
    """The run's tunable settings in one line; those the upload's metadata set are marked."""
    if not run_settings:
        return "(not recorded)"

    def shown(key: str) -> str:
        mark = " (from the upload)" if key in overridden else ""
        return f"{key}={run_settings[key]}{mark}"

    return ", ".join(shown(key) for key in run_settings)


def run_started(
    run_key: str,
    dataset: DatasetRef,
    run_id: str,
    run_url: str,
    run_settings: Mapping[str, Any] | None = None,
    overridden: tuple[str, ...] = (),
) -> Notification:
    message = "\n".join(
        [
            "A Kubeflow Pipelines run started for a new MNIST dataset.",
            "",
            f"Dataset:  {dataset.uri}",
            f"Run key:  {run_key}",
            f"KFP run:  {run_id}",
            f"Link:     {run_url or '(KFP UI address not configured)'}",
            f"Settings: {settings_line(run_settings or {}, overridden)}",
            "",
            "You will get another email when the endpoint is ready or if the run fails.",
        ]
    )
    return Notification(
        contracts.KIND_RUN_STARTED, subject_line(f"MNIST run started ({run_key})"), message
    )


def run_could_not_start(
    run_key: str, dataset: DatasetRef, reason: str, attempts: int, what_to_check: str
) -> Notification:
    """Sent once, when the start is given up: at Lambda's last attempt (a queued run: at its
    START_ATTEMPTS_LIMIT-th claim), or at once for an error that no retry can heal."""
    message = "\n".join(
        [
            "A Kubeflow Pipelines run could not be started for an uploaded MNIST dataset.",
            "",
            f"Dataset:  {dataset.uri}",
            f"Run key:  {run_key}",
            f"Why:      {reason}",
            f"Attempts: {attempts} (each retried the KFP calls with backoff)",
            "",
            f"What to check: {what_to_check}",
            "",
            "No run was started, and none will be for this upload on its own: the upload event",
            "is kept on start-run's failure queue. After fixing the cause, `mnistflow redrive`",
            "hands it back (or upload the file again); a run key never gets a second run.",
        ]
    )
    return Notification(
        contracts.KIND_RUN_FAILED,
        subject_line(f"MNIST run could not start ({run_key}): {reason}"),
        message,
    )


_STEP_SUFFIXES = {
    contracts.STEP_TRAINING: contracts.TRAINING_JOB_SUFFIX,
    contracts.STEP_MODEL: contracts.MODEL_SUFFIX,
    contracts.STEP_TRANSFORM: contracts.TRANSFORM_JOB_SUFFIX,
    contracts.STEP_ENDPOINT: contracts.ENDPOINT_SUFFIX,
}
DIGIT_SAMPLE = 5  # how many test digits the `mnistflow predict` example sends


def endpoint_ready(
    event: ProgressEvent,
    record: RunRecord,
    kfp_link: str,
    emulator_url: str = "",
    cost: list[str] | tuple[str, ...] = (),
) -> Notification:
    """ENDPOINT_READY, from the event that showed it (endpoint IN_SERVICE or pipeline SUCCEEDED)
    and the record as it was before that event. `emulator_url`: the AWS emulator the function
    itself calls (the local stack), which the commands must name and which bills nothing."""
    name, arn = _endpoint(event, record)
    region = event.region
    at = f" --endpoint-url {emulator_url}" if emulator_url else ""
    training = record.entry(contracts.STEP_TRAINING, rr.COMPLETED)
    lines = [
        "The MNIST model of this run is deployed and the endpoint is in service.",
        "",
        f"Endpoint:  {name}",
        f"ARN:       {arn}",
        f"Region:    {region}",
        f"Run key:   {event.run_key}",
        f"Dataset:   {_dataset_line(record, event)}",
        _accuracy_line(record),
        f"Settings:  {settings_line(record.run_settings, record.overridden)}",
    ]
    if training is not None and training.metrics:
        shown = training_line(training.metrics)
        if shown:
            lines.append(f"Training:  {shown}")
    lines += [
        f"Took:      {_duration(record.created_at, event.time)}"
        " (upload accepted to endpoint in service)",
        f"KFP run:   {kfp_link or '(link not known: KFP UI address not configured)'}",
        "",
        "Send it a digit. digit.csv holds one 28x28 image as 784 comma-separated pixel values",
        "in [0, 1], on one line:",
        "",
        f"  aws sagemaker-runtime invoke-endpoint{at} --region {region} --endpoint-name {name}"
        " --content-type text/csv --body fileb://digit.csv /dev/stdout",
        "",
        f"or send {DIGIT_SAMPLE} labelled digits from the MNIST test set with the CLI:",
        "",
        f"  mnistflow predict{at} --endpoint {name} --sample {DIGIT_SAMPLE}",
        "",
    ]
    if emulator_url:
        lines.append(
            "This endpoint is the local stack's (AWS emulated at that address): nothing is"
            " billed, and it ends when the stack stops."
        )
    else:
        lines += [
            "The endpoint bills by the hour while it is in service; delete it when you are done:",
            f"  aws sagemaker delete-endpoint --region {region} --endpoint-name {name}",
        ]
    lines += cost_block(cost)
    return Notification(
        contracts.KIND_ENDPOINT_READY,
        subject_line(f"MNIST endpoint ready: {name} ({event.run_key})"),
        "\n".join(lines),
    )


def run_closed(record: RunRecord, finding: str, kfp_link: str) -> Notification:
    """RUN_FAILED from the stuck-run watchdog: what it found, for a run that went quiet."""
    dataset = record.dataset.uri if record.dataset else "(not recorded)"
    lines = [
        "An MNIST pipeline run went quiet and was closed by the stuck-run watchdog.",
        "",
        f"Found:     {finding}",
        f"Run key:   {record.run_key}",
        f"Dataset:   {dataset}",
        f"Accepted:  {record.created_at}",
        f"KFP run:   {record.kfp_run_id or '(none)'}",
        f"KFP link:  {kfp_link or '(not known: KFP UI address not configured)'}",
        "",
        "To try again after fixing the cause: mnistflow rerun " + record.run_key,
        "(a new run on the same dataset), or upload a corrected dataset under incoming/.",
    ]
    return Notification(
        contracts.KIND_RUN_FAILED,
        subject_line(f"MNIST run closed ({record.run_key}): {finding}"),
        "\n".join(lines),
    )


def owed(record: RunRecord, kind: str, what_to_check: str) -> Notification | None:
    """The email a finished start owes (REJECTED, START_FAILED, RUN_STARTED), rebuilt from the
    record, for when its first publish did not go out; None when the record cannot say."""
    dataset = record.dataset
    if dataset is None:
        return None
    if kind == contracts.KIND_DATA_REJECTED:
        return data_rejected(record.run_key, dataset, record.reason)
    if kind == contracts.KIND_RUN_FAILED:
        return run_could_not_start(
            record.run_key, dataset, record.reason, record.claim_attempts, what_to_check
        )
    if kind == contracts.KIND_RUN_STARTED:
        return run_started(
            record.run_key,
            dataset,
            record.kfp_run_id,
            record.kfp_run_url,
            record.run_settings,
            record.overridden,
        )
    return None


# The email a finished start owes, by start-run's status.
OWED_BY_STATUS = {
    contracts.STATUS_REJECTED: contracts.KIND_DATA_REJECTED,
    contracts.STATUS_START_FAILED: contracts.KIND_RUN_FAILED,
    contracts.STATUS_RUN_STARTED: contracts.KIND_RUN_STARTED,
}


def _accuracy_line(record: RunRecord) -> str:
    accuracy = record.accuracy
    if accuracy is None:
        return "Accuracy:  not measured (the run recorded no evaluation)"
    weakest = ", ".join(f"{digit} ({recall:.0%})" for digit, recall in record.weakest_digits())
    line = f"Accuracy:  {accuracy:.1%} on the held-out test split"
    return line + (f"; weakest digits: {weakest}" if weakest else "")


# The settings that refuse a dataset for its size, not its content (pipeline/steps/dataset.py
# names them in its refusals).
DATASET_LIMIT_SETTINGS = ("max_dataset_bytes", "preprocess_memory")


def _percent(value: Any) -> str:
    # Two decimals: an accuracy just under the gate never reads as equal to it.
    return f"{value:.2%}" if isinstance(value, int | float) else "(not reported)"


def cost_block(cost: list[str] | tuple[str, ...]) -> list[str]:
    """The run's cost (lambdas.logic.costs.cost_lines), as the email's last paragraph."""
    return ["", "Cost:", *cost] if cost else []


def model_rejected(
    event: ProgressEvent, record: RunRecord, kfp_link: str, cost: list[str] | tuple[str, ...] = ()
) -> Notification:
    """MODEL_REJECTED: the quality gate kept the model from being deployed; what to try."""
    evaluation = {**record.evaluation, **event.metrics}
    accuracy = evaluation.get("accuracy")
    threshold = evaluation.get("min_accuracy")
    k = int(evaluation.get("k") or record.run_settings.get("k") or 0)
    suggestion = (
        f"upload the dataset again with more clusters, e.g. S3 metadata x-amz-meta-k: {2 * k}"
        f" (this run used k={k}), or check that the labels match the images"
        if 0 < k < 128
        else "check that the labels match the images"
    )
    if contracts.NOT_BETTER_THAN_SERVING in event.error:
        return _not_better_than_serving(event, record, kfp_link, evaluation, cost)
    lines = [
        "An MNIST model was trained and evaluated, but it is below the quality gate:",
        "nothing was deployed, and whatever was served before stays as it was.",
        "",
        f"Accuracy:  {_percent(accuracy)} on the held-out test split",
        f"Gate:      {_percent(threshold)} (the stack's min_accuracy)",
        f"Run key:   {event.run_key}",
        f"Dataset:   {_dataset_line(record, event)}",
        f"Settings:  {settings_line(record.run_settings, record.overridden)}",
        f"KFP run:   {kfp_link or '(link not known: KFP UI address not configured)'}",
        "",
        f"What to try: {suggestion}.",
    ]
    lines += cost_block(cost)
    return Notification(
        contracts.KIND_MODEL_REJECTED,
        subject_line(
            f"MNIST model rejected ({event.run_key}): accuracy {_percent(accuracy)}"
            f" under the {_percent(threshold)} gate"
        ),
        "\n".join(lines),
    )


def _not_better_than_serving(
    event: ProgressEvent,
    record: RunRecord,
    kfp_link: str,
    evaluation: dict,
    cost: list[str] | tuple[str, ...],
) -> Notification:
    """MODEL_REJECTED by champion/challenger: it passed the gate, but the model the endpoint
    serves scored better on the same test split (less the tolerance)."""
    accuracy = evaluation.get("accuracy")
    champion = evaluation.get("champion_accuracy")
    tolerance = evaluation.get("deploy_tolerance")
    lines = [
        "An MNIST model was trained and evaluated. It passed the quality gate, but it is not"
        " better than the model the endpoint serves:",
        "nothing was deployed, and the serving model stays.",
        "",
        f"Accuracy:  {_percent(accuracy)} on the held-out test split",
    ]
    if event.step == contracts.STEP_EVALUATE:
        lines.append(f"Serving:   {_percent(champion)}, the serving model on the same test split")
    else:  # the re-check before the endpoint update: another model had been deployed since
        lines.append("Serving:   a model deployed after this one was evaluated (figures below)")
    lines += [
        f"Tolerance: {_percent(tolerance)} (the stack's deploy_tolerance: a model deploys when"
        " its accuracy is at least the serving model's less this)",
        f"Gate:      {_percent(evaluation.get('min_accuracy'))} (the stack's min_accuracy)",
        f"Why:       {event.error}",
        f"Run key:   {event.run_key}",
        f"Dataset:   {_dataset_line(record, event)}",
        f"Settings:  {settings_line(record.run_settings, record.overridden)}",
        f"KFP run:   {kfp_link or '(link not known: KFP UI address not configured)'}",
        "",
        "What to try: train on more or cleaner data, or with more clusters (S3 metadata"
        " x-amz-meta-k), and upload again. With model_registry on, this model's version in the"
        " registry is Rejected.",
    ]
    lines += cost_block(cost)
    figures = (
        f"{_percent(accuracy)} vs the serving model's {_percent(champion)}"
        if event.step == contracts.STEP_EVALUATE
        else f"{_percent(accuracy)}, {contracts.NOT_BETTER_THAN_SERVING}"
    )
    return Notification(
        contracts.KIND_MODEL_REJECTED,
        subject_line(f"MNIST model rejected ({event.run_key}): {figures}"),
        "\n".join(lines),
    )


def run_failed(
    event: ProgressEvent, record: RunRecord, kfp_link: str, cost: list[str] | tuple[str, ...] = ()
) -> Notification:
    """RUN_FAILED: which step, why, and where to look."""
    step = event.step
    reason = _failure_reason(event)
    resource = event.resource_name or _resource_of(event, step)
    lines = [
        f"An MNIST pipeline run failed at step {step}.",
        "",
        f"Step:      {step} ({event.status})",
        f"Reason:    {reason}",
        f"Run key:   {event.run_key}",
        f"Dataset:   {_dataset_line(record, event)}",
        f"When:      {event.time}",
        "",
        "Where to look:",
    ]
    if resource:
        lines.append(f"  SageMaker resource: {resource}")
    # SageMaker's resources log in CloudWatch Logs; the other steps log in KFP.
    if step in sagemaker_events.BY_STEP and resource:
        lines.append(f"  CloudWatch logs:    {sagemaker_events.BY_STEP[step].where_logs(resource)}")
    else:
        lines.append(f"  KFP step logs:      the {step} step of the KFP run (link below)")
    # The run id start-run recorded names the run in KFP's UI and API; the pipeline's own
    # event only knows its job resource name (on kfp.local, a placeholder).
    kfp_run = record.kfp_run_id or event.kfp_run
    if kfp_run:
        lines.append(f"  KFP run:            {kfp_run}")
    lines += [
        f"  KFP link:           {kfp_link or '(not known: KFP UI address not configured)'}",
        "",
    ]
    limits = [name for name in DATASET_LIMIT_SETTINGS if name in reason]
    if step == contracts.STEP_PREPROCESS and reason.startswith("DatasetError") and limits:
        # A genuine file over a limit of this stack: the limit is the thing to change.
        lines += [
            f"The file is over this stack's {' and '.join(limits)}: raise it in cdk.json's"
            " context and deploy, then: mnistflow rerun " + event.run_key,
        ]
    elif step == contracts.STEP_ENDPOINT and contracts.ROLLED_BACK_ERROR in reason:
        # SageMaker's guardrails rolled the update back: the endpoint still serves the model
        # it served before (named in the reason); this run's model serves nowhere.
        lines += [
            "The endpoint update was rolled back: its alarms fired while the new model baked.",
            "The model it served before keeps serving; this run's model is not served.",
        ]
    elif step == contracts.STEP_PREPROCESS and reason.startswith("DatasetError"):
        # The file itself is wrong: a rerun reads the same file and fails the same way.
        lines.append("The dataset file is the problem: fix it and upload it again under incoming/.")
    else:
        lines += [
            "To try again after fixing the cause: mnistflow rerun " + event.run_key,
            "(a new run on the same dataset), or upload a corrected dataset under incoming/.",
        ]
    lines += cost_block(cost)
    return Notification(
        contracts.KIND_RUN_FAILED,
        subject_line(f"MNIST run failed at {step} ({event.run_key}): {reason}"),
        "\n".join(lines),
    )


def _endpoint(event: ProgressEvent, record: RunRecord) -> tuple[str, str]:
    if event.step == contracts.STEP_ENDPOINT:
        return event.resource_name, event.arn or _endpoint_arn(event, event.resource_name)
    name = event.endpoint_name or contracts.resource_name(event.run_key, contracts.ENDPOINT_SUFFIX)
    seen = record.entry(contracts.STEP_ENDPOINT, rr.IN_SERVICE)
    if seen is not None and seen.job_name == name and seen.arn:
        return name, seen.arn
    return name, _endpoint_arn(event, name)


def _endpoint_arn(event: ProgressEvent, name: str) -> str:
    if event.region.startswith("cn-"):
        partition = "aws-cn"
    elif event.region.startswith("us-gov-"):
        partition = "aws-us-gov"
    else:
        partition = "aws"
    # SageMaker spells resource names in lower case inside ARNs.
    return f"arn:{partition}:sagemaker:{event.region}:{event.account}:endpoint/{name.lower()}"


def _failure_reason(event: ProgressEvent) -> str:
    if event.failure_reason:
        return event.failure_reason
    if event.error:
        return event.error
    if event.normalized == rr.STOPPED:
        return f"the {event.step} job was stopped before it finished"
    if event.normalized == rr.CANCELED:
        return "the KFP run was canceled"
    return f"{event.step} reported {event.status} without a reason"


def _resource_of(event: ProgressEvent, step: str) -> str:
    if step == contracts.STEP_ENDPOINT and event.endpoint_name:
        return event.endpoint_name
    suffix = _STEP_SUFFIXES.get(step)
    return contracts.resource_name(event.run_key, suffix) if suffix else ""


def _dataset_line(record: RunRecord, event: ProgressEvent) -> str:
    dataset = record.dataset
    if dataset is not None:
        if dataset.version:
            return f"{dataset.uri} (version {dataset.version})"
        return f"{dataset.uri} (unversioned, ETag {dataset.etag or '?'})"
    return event.dataset_uri or "(not in the run record)"


def _duration(started: str, ended: str) -> str:
    try:
        seconds = int((_instant(ended) - _instant(started)).total_seconds())
    except (TypeError, ValueError):
        return "unknown (the run record has no start time)"
    if seconds < 0:
        return "unknown (the event is older than the run record)"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min {secs:02d} s" if hours else f"{minutes} min {secs:02d} s"


def _instant(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


# The built-in k-means image's final metrics, in words: test:msd and test:ssd are documented
# (https://docs.aws.amazon.com/sagemaker/latest/dg/k-means-tuning.html, "Metrics Computed by
# the K-Means Algorithm"); the image also reports train:msd and train:progress. Progress and
# throughput say nothing about the model: left out.
_TRAINING_METRICS = {
    "train:msd": "mean squared distance to the nearest centre {} (training data)",
    "test:msd": "mean squared distance to the nearest centre {} (test data)",
    "test:ssd": "sum of squared distances {} (test data)",
}
_UNSAID_METRICS = ("train:progress", "train:throughput")


def training_line(metrics: dict[str, Any]) -> str:
    """The training job's final metrics in words; unknown ones as name and value."""
    said = []
    for name, value in sorted(metrics.items()):
        if name in _UNSAID_METRICS or not isinstance(value, int | float):
            continue
        shown = f"{value:.4g}"
        said.append(_TRAINING_METRICS[name].format(shown) if name in _TRAINING_METRICS else
                    f"{name} {shown}")  # fmt: skip
    return "; ".join(said)


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
