"""The uploaded object itself (S3): its user metadata, which may set the run's settings.

The S3 notification carries no metadata, so start-run asks for it with HeadObject on the exact
version that started the run (HeadObject needs s3:GetObject, and s3:GetObjectVersion with a
VersionId: S3 API reference, HeadObject, "Permissions").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from core.run_record import DatasetRef
from lambdas.logic.ports import UploadGone, UploadMetadata


class S3UploadMetadata(UploadMetadata):
    def __init__(self, s3_client: Callable[[], Any]):
        self._s3 = s3_client

    def metadata(self, dataset: DatasetRef) -> dict[str, str]:
        request = {"Bucket": dataset.bucket, "Key": dataset.key}
        if dataset.version:
            request["VersionId"] = dataset.version
        try:
            answer = self._s3().head_object(**request)
        except ClientError as error:
            # HeadObject has no body: a missing key or version is a bare 404.
            if error.response["Error"]["Code"] in ("404", "NoSuchKey", "NoSuchVersion"):
                raise UploadGone(f"{dataset.uri} (version {dataset.version or '-'})") from None
            raise
        return dict(answer.get("Metadata") or {})
