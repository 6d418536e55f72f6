"""The AWS emulator of the local stack, in this process, on 127.0.0.1: moto in server mode for
every service but SageMaker, and the local SageMaker (`mnistflow.local.sagemaker`), which trains
and serves k-means for real, for SageMaker and SageMaker Runtime.

SageMaker state has one owner, the local SageMaker. Clients reach it three ways, all the same
server: boto3's per-service endpoint variables in `environment()` (`AWS_ENDPOINT_URL_SAGEMAKER`
and `AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`, which botocore reads before `AWS_ENDPOINT_URL`:
botocore 1.43 `configprovider.EndpointConfigProvider`, "Service-specific endpoints"), `client()`,
and moto's own port: a request there signed for SageMaker (both APIs sign as `sagemaker`) is
handed to the local SageMaker, so a tool given one endpoint URL for everything (`--endpoint-url`,
`AWS_ENDPOINT_URL`) meets the same jobs and endpoints. moto's SageMaker is never reached.
"""

from __future__ import annotations

import re
import urllib.parse
import urllib.request
from collections.abc import Callable
from types import TracebackType
from typing import Any

import boto3
from moto.server import DomainDispatcherApplication, create_backend_app

from core.contracts import SAGEMAKER_POLL_SECONDS_VARIABLE
from mnistflow.local.loopback import (  # noqa: F401 (EmulatorError, LOOPBACK: this module's API)
    LOOPBACK,
    SHUTDOWN_TIMEOUT_SECONDS,
    EmulatorError,
    LoopbackServer,
)
from mnistflow.local.sagemaker import DEFAULT_DELAY_SECONDS, LocalSageMaker

EMULATOR_REGION = "us-east-1"
# moto accepts any credentials; these only keep boto3 from looking for real ones.
EMULATOR_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}
# The services the local SageMaker answers, and the signing name both use (botocore's models).
SAGEMAKER_SERVICES = ("sagemaker", "sagemaker-runtime")
SAGEMAKER_SIGNING_NAME = "sagemaker"
SAGEMAKER_ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_SAGEMAKER", "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME")
# How often the pipeline's steps ask the local SageMaker for a status (the steps' own default
# is for AWS, where a job takes minutes; core.contracts.SAGEMAKER_POLL_SECONDS_VARIABLE).
STEP_POLL_SECONDS = 0.25
# SigV4's credential scope, "Credential=<key>/<date>/<region>/<service>/aws4_request", in the
# Authorization header or (presigned) the X-Amz-Credential query parameter.
_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/,&]+/\d{8}/[^/,&]+/([^/,&]+)/aws4_request")


def signed_for(environ: dict[str, Any]) -> str | None:
    """The service a request is signed for, if it is signed."""
    for where in (environ.get("HTTP_AUTHORIZATION", ""), environ.get("QUERY_STRING", "")):
        if found := _CREDENTIAL_SCOPE.search(urllib.parse.unquote(where)):
            return found.group(1)
    return None


class AwsEmulator:
    """Starts moto's server on a port (0 = any free one) and the local SageMaker on another;
    stops both on exit. `sagemaker_delay_seconds`: how long SageMaker jobs stay InProgress and
    endpoints Creating or Updating, at least; `sagemaker_bake_time_scale`: a guardrails' baking
    period lasts its TerminationWaitInSeconds times this."""

    def __init__(
        self,
        port: int = 0,
        region: str = EMULATOR_REGION,
        *,
        sagemaker_delay_seconds: float = DEFAULT_DELAY_SECONDS,
        sagemaker_bake_time_scale: float = 1.0,
    ) -> None:
        self.region = region
        self._moto = DomainDispatcherApplication(create_backend_app)
        self._sagemaker: LocalSageMaker | None = None
        self._server = LoopbackServer(self._dispatch, port=port, name="aws-emulator")
        self.port = self._server.port
        self.endpoint_url = self._server.url
        try:
            # moto keeps its state per process: start every emulator empty.
            reset_url = f"{self.endpoint_url}/moto-api/reset"
            reset = urllib.request.Request(reset_url, method="POST")  # noqa: S310 (loopback)
            urllib.request.urlopen(reset, timeout=SHUTDOWN_TIMEOUT_SECONDS).close()  # noqa: S310
            self._sagemaker = LocalSageMaker.for_emulator(
                self.endpoint_url,
                region,
                EMULATOR_CREDENTIALS,
                delay_seconds=sagemaker_delay_seconds,
                bake_time_scale=sagemaker_bake_time_scale,
            )
        except BaseException:
            self._server.stop()
            raise

    @property
    def sagemaker(self) -> LocalSageMaker:
        assert self._sagemaker is not None
        return self._sagemaker

    @property
    def sagemaker_url(self) -> str:
        return self.sagemaker.endpoint_url

    def _dispatch(self, environ: dict[str, Any], start_response: Callable) -> Any:
        if self._sagemaker is not None and signed_for(environ) == SAGEMAKER_SIGNING_NAME:
            return self._sagemaker.wsgi_app(environ, start_response)
        return self._moto(environ, start_response)

    def environment(self) -> dict[str, str]:
        """What a process (or a pipeline step) needs in its environment to use the emulator."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            **dict.fromkeys(SAGEMAKER_ENDPOINT_VARIABLES, self.sagemaker_url),
            SAGEMAKER_POLL_SECONDS_VARIABLE: str(STEP_POLL_SECONDS),
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
            **EMULATOR_CREDENTIALS,
        }

    def client(self, service: str):
        return boto3.client(
            service,
            region_name=self.region,
            endpoint_url=self.sagemaker_url if service in SAGEMAKER_SERVICES else self.endpoint_url,
            aws_access_key_id=EMULATOR_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=EMULATOR_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def stop(self) -> None:
        if self._sagemaker is not None:
            self._sagemaker.stop()
        self._server.stop()

    def __enter__(self) -> AwsEmulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
