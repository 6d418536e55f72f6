"""The plain-text emails the start-run Lambda sends: subject under 100 ASCII characters."""

from __future__ import annotations

from dataclasses import dataclass

from runflow import contracts
from runflow.logic.ports import Dataset

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


def data_rejected(run_key: str, dataset: Dataset, reason: str) -> Notification:
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


def run_started(run_key: str, dataset: Dataset, run_id: str, run_url: str) -> Notification:
    message = "\n".join(
        [
            "A Kubeflow Pipelines run started for a new MNIST dataset.",
            "",
            f"Dataset:  {dataset.uri}",
            f"Run key:  {run_key}",
            f"KFP run:  {run_id}",
            f"Link:     {run_url or '(KFP UI address not configured)'}",
            "",
            "You will get another email when the endpoint is ready or if the run fails.",
        ]
    )
    return Notification(
        contracts.KIND_RUN_STARTED, subject_line(f"MNIST run started ({run_key})"), message
    )


def run_could_not_start(
    run_key: str, dataset: Dataset, reason: str, attempts: int, what_to_check: str
) -> Notification:
    message = "\n".join(
        [
            "A Kubeflow Pipelines run could not be started for an uploaded MNIST dataset.",
            "",
            f"Dataset:  {dataset.uri}",
            f"Run key:  {run_key}",
            f"Why:      {reason}",
            f"Attempts: {attempts} call(s) to the KFP API in this invocation",
            "",
            f"What to check: {what_to_check}",
            "",
            "The event goes back to Lambda: it is retried automatically and, when the retries",
            "run out, kept on the function's failure destination. A later delivery of the same",
            "upload tries again and never starts a second run for it.",
        ]
    )
    return Notification(
        contracts.KIND_RUN_FAILED,
        subject_line(f"MNIST run could not start ({run_key}): {reason}"),
        message,
    )
