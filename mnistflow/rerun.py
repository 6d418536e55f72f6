"""`rerun`: a new run on a dataset that already ran, through the same trigger as an upload.

The dataset's version is copied onto its own key: S3 makes a new version, the upload
notification fires, and start-run starts a run under the new version's run key.
"""

from __future__ import annotations

from core.contracts import RERUN_OF_METADATA
from lambdas.dal.runs_table import RunsTableReader
from mnistflow.status import UnknownRun, read_run


class RerunError(Exception):
    pass


def rerun(reader: RunsTableReader, s3, run_key: str) -> tuple[str, str, str]:
    """Returns (bucket, key, new version id)."""
    try:
        record = read_run(reader, run_key)
    except UnknownRun as error:
        raise RerunError(str(error)) from None
    dataset = record.dataset
    if dataset is None:
        raise RerunError(f"run {run_key} has no dataset on record (an orphan): nothing to rerun")
    source = {"Bucket": dataset.bucket, "Key": dataset.key}
    if dataset.version:
        source["VersionId"] = dataset.version
    try:
        # The copy keeps the upload's own metadata (its per-upload run settings), so the rerun
        # trains with the settings the first run used, and adds which run it repeats.
        metadata = s3.head_object(**source).get("Metadata", {})
        copy = s3.copy_object(
            Bucket=dataset.bucket,
            Key=dataset.key,
            CopySource=source,
            MetadataDirective="REPLACE",
            Metadata={**metadata, RERUN_OF_METADATA: run_key},
        )
    except s3.exceptions.ClientError as error:
        raise RerunError(
            f"cannot copy {dataset.uri}: {error.response['Error'].get('Message', error)}"
        ) from None
    return dataset.bucket, dataset.key, copy.get("VersionId", "")
