"""Faults on a function's AWS calls, injected through botocore's own events on its clients.

One fault hits the n-th call of one operation, after botocore's retries (as a call that still
failed would reach the function):

- "throttle": AWS answered 400 with the service's throttling code;
- "5xx": AWS answered 500;
- "timeout": no answer, the request never processed (botocore's ReadTimeoutError);
- "answer lost": the request was processed, then its answer lost (ReadTimeoutError after it).

`before-call` may answer a call in place of AWS, and `after-call` sees the answer before the
caller does (botocore/client.py, BaseClient._make_api_call).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError

THROTTLE, SERVER_ERROR, TIMEOUT, ANSWER_LOST = "throttle", "5xx", "timeout", "answer lost"
FAULTS = (THROTTLE, SERVER_ERROR, TIMEOUT, ANSWER_LOST)
# Each service's throttling answer: (HTTP status, error code), from botocore's service models
# (S3 throttles with 503 SlowDown: S3 API reference, "Error responses").
THROTTLING = {
    "dynamodb": (400, "ProvisionedThroughputExceededException"),
    "sns": (429, "Throttled"),
    "secretsmanager": (400, "ThrottlingException"),
    "eks": (429, "ThrottlingException"),
    "s3": (503, "SlowDown"),
}


@dataclass
class AwsFault:
    service: str  # botocore's service name: dynamodb, sns, secretsmanager, eks
    operation: str  # UpdateItem, Publish, ...
    kind: str  # one of FAULTS
    nth: int = 1  # which call of the operation (1: the first)
    seen: int = 0
    fired: bool = False
    calls: list[str] = field(default_factory=list)

    def attach(self, client: Any) -> None:
        client.meta.events.register(f"before-call.{self.service}.{self.operation}", self._before)
        client.meta.events.register(f"after-call.{self.service}.{self.operation}", self._after)

    def _mine(self) -> bool:
        return self.seen == self.nth and not self.fired

    def _before(self, **_: Any):
        self.seen += 1
        if not self._mine() or self.kind == ANSWER_LOST:
            return None
        self.fired = True
        if self.kind == TIMEOUT:
            raise ReadTimeoutError(endpoint_url=f"https://{self.service}.amazonaws.com")
        status, code = THROTTLING[self.service] if self.kind == THROTTLE else (500, "InternalError")
        response = AWSResponse(f"https://{self.service}.amazonaws.com", status, {}, None)
        parsed = {
            "Error": {"Code": code, "Message": f"injected {self.kind}"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }
        return response, parsed

    def _after(self, http_response: Any = None, **_: Any) -> None:
        if self.kind == ANSWER_LOST and self._mine() and http_response.status_code < 300:
            self.fired = True
            raise ReadTimeoutError(endpoint_url=f"https://{self.service}.amazonaws.com")
