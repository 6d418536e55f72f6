"""Serving a WSGI application on 127.0.0.1 from a thread: how the local stack's servers run."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

from werkzeug.serving import WSGIRequestHandler, make_server

LOOPBACK = "127.0.0.1"
SHUTDOWN_TIMEOUT_SECONDS = 10.0


class EmulatorError(RuntimeError):
    """The emulator could not start (for example, the port is taken)."""


class _QuietRequestHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:  # one line per AWS call drowns the demo
        pass


class LoopbackServer:
    """`app` served on 127.0.0.1:`port` (0 = any free one) until `stop()`."""

    def __init__(self, app: Callable, *, port: int = 0, name: str = "server") -> None:
        try:
            # Bound here, in the caller's thread, so a taken port fails at once and clearly.
            self._socket = socket.create_server((LOOPBACK, port))
        except OSError as error:
            raise EmulatorError(f"cannot listen on {LOOPBACK}:{port}: {error.strerror}") from None
        self.port = self._socket.getsockname()[1]
        self.url = f"http://{LOOPBACK}:{self.port}"
        self._server = make_server(
            LOOPBACK,
            self.port,
            app,
            threaded=True,
            request_handler=_QuietRequestHandler,
            fd=self._socket.fileno(),
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"{name}-{self.port}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._socket.close()
        self._thread.join(SHUTDOWN_TIMEOUT_SECONDS)
