"""AWS clients, created on first use and cached per container (never at import time).

botocore directly rather than boto3: `import boto3` also imports s3transfer (~60 ms of a
cold start) for features this package does not use; the clients are the same.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import botocore.session
from botocore.config import Config

AWS_CONNECT_TIMEOUT_SECONDS = 3
AWS_READ_TIMEOUT_SECONDS = 10
AWS_MAX_ATTEMPTS = 3  # botocore's own retries (standard mode) for DynamoDB, SNS, EKS, STS


@cache
def _session() -> botocore.session.Session:
    return botocore.session.get_session()


@cache
def aws_client(service: str, region: str) -> Any:
    return _session().create_client(
        service,
        region_name=region,
        config=Config(
            connect_timeout=AWS_CONNECT_TIMEOUT_SECONDS,
            read_timeout=AWS_READ_TIMEOUT_SECONDS,
            retries={"mode": "standard", "max_attempts": AWS_MAX_ATTEMPTS},
        ),
    )


def reset_aws_clients() -> None:
    """For tests: forget the cached clients (moto must be active when they are made)."""
    aws_client.cache_clear()
    _session.cache_clear()
