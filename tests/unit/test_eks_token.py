"""The EKS bearer token: k8s-aws-v1. + base64url(presigned STS GetCallerIdentity URL)."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from lambdas.dal.eks_token import (
    TOKEN_EXPIRES_SECONDS,
    TOKEN_REUSE_SECONDS,
    EksTokenSource,
    describe_cluster,
)
from tests.fakes import FakeClock


def decode(token: str) -> tuple[str, dict[str, list[str]]]:
    assert token.startswith("k8s-aws-v1.")
    body = token.removeprefix("k8s-aws-v1.")
    assert "=" not in body, "padding must be stripped"
    url = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
    return url, parse_qs(urlsplit(url).query)


@pytest.fixture
def sts():
    client = boto3.client("sts", region_name="eu-west-1")
    return lambda: client


def test_token_is_a_presigned_get_caller_identity_for_the_cluster(sts):
    # Given a token source for a cluster
    source = EksTokenSource("mnist-cluster", sts)

    # When a token is made (signing is local: no network in unit tests)
    url, query = decode(source.bearer_token())

    # Then it is a GET of STS GetCallerIdentity, signed with the cluster header, 60 s expiry
    parts = urlsplit(url)
    assert parts.scheme == "https" and parts.hostname.startswith("sts")
    assert parts.hostname.endswith("amazonaws.com")
    assert query["Action"] == ["GetCallerIdentity"] and query["Version"] == ["2011-06-15"]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == [str(TOKEN_EXPIRES_SECONDS)] == ["60"]
    assert "x-k8s-aws-id" in query["X-Amz-SignedHeaders"][0].split(";")
    assert query["X-Amz-Credential"][0].startswith("testing/")
    assert "ClusterName" not in query


def test_token_is_reused_briefly_then_signed_again(sts):
    # Given a token source on a fake clock that counts its signatures
    clock = FakeClock()
    signed = []
    source = EksTokenSource("mnist-cluster", lambda: signed.append(1) or sts(), clock=clock.time)
    first = source.bearer_token()

    # When the clock moves less than the reuse window, Then the same token comes back
    clock.now += TOKEN_REUSE_SECONDS - 1
    assert source.bearer_token() == first and len(signed) == 1

    # When it moves past the window (still inside the 60 s expiry), Then it signs again
    clock.now += 2
    source.bearer_token()
    assert len(signed) == 2
    assert TOKEN_REUSE_SECONDS < TOKEN_EXPIRES_SECONDS


def test_invalidate_forces_a_new_signature(sts):
    # Given a fresh token
    signed = []
    source = EksTokenSource("mnist-cluster", lambda: signed.append(1) or sts())
    source.bearer_token()

    # When it is invalidated (after a 401), Then the next call signs a new one
    source.invalidate()
    source.bearer_token()
    assert len(signed) == 2


def test_describe_cluster_decodes_the_ca():
    # Given an EKS client answering DescribeCluster
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

    class Eks:
        def describe_cluster(self, name):
            return {
                "cluster": {
                    "endpoint": "https://ABC.gr7.eu-west-1.eks.amazonaws.com/",
                    "certificateAuthority": {"data": base64.b64encode(pem.encode()).decode()},
                }
            }

    # When it is described, Then the endpoint has no trailing slash and the CA is PEM text
    access = describe_cluster(Eks(), "mnist-cluster")
    assert access.endpoint == "https://ABC.gr7.eu-west-1.eks.amazonaws.com"
    assert access.ca_pem == pem
