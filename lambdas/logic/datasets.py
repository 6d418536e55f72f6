"""Reading S3 notifications into dataset uploads, and the checks that cost nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from core import contracts
from core.run_record import DatasetRef

S3_TEST_EVENT = "s3:TestEvent"
OBJECT_CREATED_PREFIX = "ObjectCreated:"


@dataclass(frozen=True)
class Upload:
    """One S3 record: a dataset to start, or the reason it is skipped without a record."""

    dataset: DatasetRef | None
    skip_reason: str = ""
    event_name: str = ""


def uploads_in(event: dict[str, Any], data_bucket: str) -> list[Upload]:
    """The records of an S3 notification; the setup test event yields one skipped upload."""
    if event.get("Event") == S3_TEST_EVENT:
        return [Upload(None, f"S3 test event for bucket {event.get('Bucket', '?')}", S3_TEST_EVENT)]
    records = event.get("Records")
    if not isinstance(records, list):
        return [Upload(None, "not an S3 notification: no Records", "")]
    return [_upload(record, data_bucket) for record in records]


def _upload(record: dict[str, Any], data_bucket: str) -> Upload:
    event_name = str(record.get("eventName", ""))
    s3 = record.get("s3") or {}
    bucket = str((s3.get("bucket") or {}).get("name", ""))
    obj = s3.get("object") or {}
    # S3 URL-encodes keys in notifications, with `+` for a space.
    key = unquote_plus(str(obj.get("key", "")))
    if not event_name.startswith(OBJECT_CREATED_PREFIX):
        return Upload(None, f"event {event_name or '?'} is not an object creation", event_name)
    if bucket != data_bucket:
        return Upload(None, f"bucket {bucket!r} is not the data bucket {data_bucket!r}", event_name)
    if not key.startswith(contracts.INCOMING_PREFIX):
        return Upload(None, f"key {key!r} is outside {contracts.INCOMING_PREFIX}", event_name)
    if key.endswith("/"):
        return Upload(None, f"key {key!r} is a folder placeholder", event_name)
    size = obj.get("size")
    dataset = DatasetRef(
        bucket=bucket,
        key=key,
        version=str(obj.get("versionId") or ""),
        etag=str(obj.get("eTag") or ""),
        size=int(size) if isinstance(size, int | float | str) and str(size).isdigit() else None,
    )
    return Upload(dataset, "", event_name)


def rejection_reason(dataset: DatasetRef, max_dataset_bytes: int) -> str:
    """Why an upload under incoming/ cannot be a dataset, or "" when it may be one."""
    if contracts.dataset_layout(dataset.key) is None:
        return (
            f"unsupported file type: expected a name ending in "
            f"{' or '.join(contracts.DATASET_SUFFIXES)}"
        )
    if dataset.size == 0:
        return "the object is empty (0 bytes)"
    if dataset.size is not None and dataset.size > max_dataset_bytes:
        return f"the object is {dataset.size} bytes, over the limit of {max_dataset_bytes} bytes"
    return ""
