"""EKS authentication: the cluster's endpoint and CA, and the `k8s-aws-v1.` bearer token.

The token is a presigned STS GetCallerIdentity URL whose signed headers include
`x-k8s-aws-id: <cluster name>`, base64url-encoded without padding (the form
`aws eks get-token` and aws-iam-authenticator produce).
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from lambdas.logic.ports import KfpCallFailed

TOKEN_PREFIX = "k8s-aws-v1."  # noqa: S105 - a format marker, not a secret
CLUSTER_ID_HEADER = "x-k8s-aws-id"
TOKEN_EXPIRES_SECONDS = 60  # X-Amz-Expires of the presigned URL
# Sign a new token when the cached one is this old, well before its expiry.
TOKEN_REUSE_SECONDS = 40


@dataclass(frozen=True)
class ClusterAccess:
    endpoint: str  # https://<id>.<region>.eks.amazonaws.com (http accepted, for local tests)
    ca_pem: str  # "" when the cluster reports none


def describe_cluster(eks_client: Any, cluster_name: str) -> ClusterAccess:
    """Endpoint and CA from eks:DescribeCluster; failures become KfpCallFailed."""
    try:
        cluster = eks_client.describe_cluster(name=cluster_name)["cluster"]
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        kind = (
            KfpCallFailed.NOT_FOUND
            if code == "ResourceNotFoundException"
            else (KfpCallFailed.AUTH if "AccessDenied" in code else KfpCallFailed.TRANSIENT)
        )
        raise KfpCallFailed(kind, f"eks:DescribeCluster {cluster_name} failed: {code}") from error
    except BotoCoreError as error:
        raise KfpCallFailed(
            KfpCallFailed.TRANSIENT, f"eks:DescribeCluster {cluster_name} failed: {error}"
        ) from error
    ca_data = (cluster.get("certificateAuthority") or {}).get("data", "")
    ca_pem = base64.b64decode(ca_data).decode("ascii", "replace") if ca_data else ""
    return ClusterAccess(endpoint=str(cluster.get("endpoint", "")).rstrip("/"), ca_pem=ca_pem)


class EksTokenSource:
    """Bearer tokens for one cluster, signed with the function's own credentials."""

    def __init__(
        self,
        cluster_name: str,
        sts_client: Callable[[], Any],
        clock: Callable[[], float] = time.monotonic,
    ):
        self._cluster_name = cluster_name
        self._sts_client = sts_client
        self._clock = clock
        self._token = ""
        self._signed_at = 0.0
        self._hooked: set[int] = set()
        self._lock = threading.Lock()

    def bearer_token(self) -> str:
        with self._lock:
            if not self._token or self._clock() - self._signed_at >= TOKEN_REUSE_SECONDS:
                self._token = self._sign()
                self._signed_at = self._clock()
            return self._token

    def invalidate(self) -> None:
        with self._lock:
            self._token = ""

    def _sign(self) -> str:
        sts = self._sts_client()
        if id(sts) not in self._hooked:
            # ClusterName is not an STS parameter: carry it to the signer as a header.
            sts.meta.events.register(
                "provide-client-params.sts.GetCallerIdentity", _take_cluster_name
            )
            sts.meta.events.register("before-sign.sts.GetCallerIdentity", _add_cluster_header)
            self._hooked.add(id(sts))
        try:
            url = sts.generate_presigned_url(
                "get_caller_identity",
                Params={"ClusterName": self._cluster_name},
                ExpiresIn=TOKEN_EXPIRES_SECONDS,
                HttpMethod="GET",
            )
        except (BotoCoreError, ClientError) as error:
            raise KfpCallFailed(
                KfpCallFailed.AUTH, f"could not sign an EKS token: {error}"
            ) from error
        encoded = base64.urlsafe_b64encode(url.encode("utf-8")).decode("ascii").rstrip("=")
        return TOKEN_PREFIX + encoded


def _take_cluster_name(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    if "ClusterName" in params:
        context["eks_cluster_name"] = params.pop("ClusterName")


def _add_cluster_header(request: Any, **_: Any) -> None:
    name = request.context.get("eks_cluster_name")
    if name:
        request.headers[CLUSTER_ID_HEADER] = name
