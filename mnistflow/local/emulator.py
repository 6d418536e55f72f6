"""The AWS emulator of the local stack: moto in server mode on 127.0.0.1, in this process."""

from __future__ import annotations

import socket
import threading
import urllib.request
from types import TracebackType

import boto3
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import WSGIRequestHandler, make_server

LOOPBACK = "127.0.0.1"
EMULATOR_REGION = "us-east-1"
# moto accepts any credentials; these only keep boto3 from looking for real ones.
EMULATOR_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}
SHUTDOWN_TIMEOUT_SECONDS = 10.0


class EmulatorError(RuntimeError):
    """The emulator could not start (for example, the port is taken)."""


class _QuietRequestHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:  # one line per AWS call drowns the demo
        pass


class AwsEmulator:
    """Starts moto's server on a port (0 = any free one); stops it on exit."""

    def __init__(self, port: int = 0, region: str = EMULATOR_REGION) -> None:
        self.region = region
        try:
            # Bound here, in the caller's thread, so a taken port fails at once and clearly.
            self._socket = socket.create_server((LOOPBACK, port))
        except OSError as error:
            raise EmulatorError(f"cannot listen on {LOOPBACK}:{port}: {error.strerror}") from None
        self._server = make_server(
            LOOPBACK,
            self._socket.getsockname()[1],
            DomainDispatcherApplication(create_backend_app),
            threaded=True,
            request_handler=_QuietRequestHandler,
            fd=self._socket.fileno(),
        )
        self.port = self._socket.getsockname()[1]
        self.endpoint_url = f"http://{LOOPBACK}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"aws-emulator-{self.port}", daemon=True
        )
        self._thread.start()
        # moto keeps its state per process: start every emulator empty.
        reset_url = f"{self.endpoint_url}/moto-api/reset"
        reset = urllib.request.Request(reset_url, method="POST")  # noqa: S310 (http, loopback)
        urllib.request.urlopen(reset, timeout=SHUTDOWN_TIMEOUT_SECONDS).close()  # noqa: S310

    def environment(self) -> dict[str, str]:
        """What a process (or a pipeline step) needs in its environment to use the emulator."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
            **EMULATOR_CREDENTIALS,
        }

    def client(self, service: str):
        return boto3.client(
            service,
            region_name=self.region,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=EMULATOR_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=EMULATOR_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._socket.close()
        self._thread.join(SHUTDOWN_TIMEOUT_SECONDS)

    def __enter__(self) -> AwsEmulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
