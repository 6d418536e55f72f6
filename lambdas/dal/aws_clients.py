"""AWS clients for one function, created on first use (never at import time) and kept for the
container's life.

botocore directly rather than boto3: `import boto3` also imports s3transfer (~60 ms of a cold
start) for features this package does not use; the clients are the same. Region, endpoint and
credentials come from the function's own environment mapping (in Lambda: the runtime's
AWS_REGION and AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN; on the local stack:
the emulator's), so two functions hosted in one process never share a configuration.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import botocore.session
from botocore.config import Config

AWS_CONNECT_TIMEOUT_SECONDS = 3
AWS_READ_TIMEOUT_SECONDS = 10
AWS_MAX_ATTEMPTS = 3  # botocore's own retries (standard mode) for DynamoDB, SNS, EKS, STS
_CREDENTIALS = {
    "aws_access_key_id": "AWS_ACCESS_KEY_ID",
    "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "aws_session_token": "AWS_SESSION_TOKEN",
}


class AwsClients:
    """`clients("dynamodb")`: one client per service, made on first use."""

    def __init__(
        self,
        region: str,
        environ: Mapping[str, str],
        *,
        connect_timeout: float = AWS_CONNECT_TIMEOUT_SECONDS,
        read_timeout: float = AWS_READ_TIMEOUT_SECONDS,
        max_attempts: int = AWS_MAX_ATTEMPTS,
    ) -> None:
        self._region = region
        self._timeouts = (connect_timeout, read_timeout, max_attempts)
        self._endpoint_url = environ.get("AWS_ENDPOINT_URL") or None
        self._credentials = {
            argument: environ[name] for argument, name in _CREDENTIALS.items() if environ.get(name)
        }
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def in_region(self, region: str, **timeouts: Any) -> AwsClients:
        """Clients of the same endpoint and credentials in another region (the Price List API
        answers in a few regions only), with their own `timeouts` (the constructor's names)."""
        other = AwsClients(region, {}, **timeouts)
        other._endpoint_url, other._credentials = self._endpoint_url, self._credentials
        return other

    @property
    def endpoint_url(self) -> str | None:
        """The AWS endpoint every client calls: None on AWS, the emulator's on the local stack."""
        return self._endpoint_url

    def __call__(self, service: str) -> Any:
        with self._lock:
            if service not in self._clients:
                self._clients[service] = botocore.session.get_session().create_client(
                    service,
                    region_name=self._region,
                    endpoint_url=self._endpoint_url,
                    config=Config(
                        connect_timeout=self._timeouts[0],
                        read_timeout=self._timeouts[1],
                        retries={"mode": "standard", "max_attempts": self._timeouts[2]},
                    ),
                    **self._credentials,
                )
            return self._clients[service]

    def factory(self, service: str):
        """A zero-argument callable giving the service's client (what adapters take)."""
        return lambda: self(service)
