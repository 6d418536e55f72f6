"""kfp.Client's construction and health check, on the local KFP API."""

from __future__ import annotations

import http.client
import json

import pytest

from mnistflow.local.kfp_api import LocalKfpApi
from tests.conformance.conftest import TOKEN, connect

pytestmark = pytest.mark.conformance


def test_the_client_connects_with_one_health_check(api):
    # kfp/client/client.py: without a namespace, the constructor calls get_kfp_healthz, which
    # retries 5 times 5 s apart before "Failed getting healthz endpoint after 5 attempts"
    client = connect(api)
    [health] = api.requests_to("GET", "/apis/v2beta1/healthz")
    assert health.headers["authorization"] == f"Bearer {TOKEN}"
    answer = client.get_kfp_healthz()
    # healthz.proto GetHealthzResponse: multi_user, pipeline_store (standalone KFP: false)
    assert (answer.multi_user, answer.pipeline_store) == (False, "database")


def test_healthz_answers_without_a_token_as_main_go_serves_it():
    # backend/src/apiserver/main.go buildHTTPRouter: healthz is outside the gateway, any method,
    # no auth; its body is encoding/json's, so multi_user is there when false
    with LocalKfpApi(accept_token=TOKEN) as api:
        host, port = api.endpoint.removeprefix("http://").split(":")
        answers = []
        for method in ("GET", "POST"):
            connection = http.client.HTTPConnection(host, int(port), timeout=5)
            connection.request(method, "/apis/v2beta1/healthz")
            response = connection.getresponse()
            answers.append((response.status, json.loads(response.read())))
            connection.close()
    health = {"commit_sha": "local", "tag_name": "2.14.0", "multi_user": False,
              "pipeline_store": "database"}  # fmt: skip
    assert answers == [(200, health), (200, health)]


def test_a_client_given_a_namespace_skips_the_health_check(api):
    # client.py: the health check only looks for multi-user mode when no namespace is set
    connect(api, namespace="team-mnist")
    assert api.requests_to("GET", "/apis/v2beta1/healthz") == []


def test_a_wrong_token_is_refused_with_the_servers_status_body(api):
    import kfp_server_api

    client = connect(api)
    client._existing_config.api_key["authorization"] = "not-the-token"
    with pytest.raises(kfp_server_api.ApiException) as refused:
        client.list_experiments()
    assert refused.value.status == 401
    assert json.loads(refused.value.body) == {"code": 16, "message": "Unauthorized"}
