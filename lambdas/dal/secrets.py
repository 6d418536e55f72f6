"""The KFP bearer token kept in Secrets Manager (url mode): read at first use, then cached."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from lambdas.logic.ports import KfpCallFailed


class SecretBearerToken:
    """A token source; `invalidate()` after a 401 makes the next call re-read a rotated secret."""

    def __init__(self, secret_arn: str, secrets_client: Callable[[], Any]):
        self._secret_arn = secret_arn
        self._secrets = secrets_client
        self._token = ""
        self._lock = threading.Lock()

    def bearer_token(self) -> str:
        with self._lock:
            if not self._token:
                self._token = self._read()
            return self._token

    def invalidate(self) -> None:
        with self._lock:
            self._token = ""

    def _read(self) -> str:
        try:
            answer = self._secrets().get_secret_value(SecretId=self._secret_arn)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            raise KfpCallFailed(
                KfpCallFailed.AUTH,
                f"could not read the KFP token secret {self._secret_arn}: {code}",
            ) from error
        except BotoCoreError as error:
            raise KfpCallFailed(
                KfpCallFailed.TRANSIENT, f"could not read the KFP token secret: {error}"
            ) from error
        raw = str(answer.get("SecretString") or "")
        value = raw.strip()
        if value.startswith("{"):
            # Also accept {"token": "..."}, the shape a rotation function tends to write.
            value = str(json.loads(value).get("token", "")).strip()
        if not value:
            raise KfpCallFailed(
                KfpCallFailed.AUTH, f"the KFP token secret {self._secret_arn} holds no token"
            )
        return value
