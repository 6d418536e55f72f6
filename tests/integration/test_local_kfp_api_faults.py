"""The local KFP API's fault hooks do what they say (the fault tests of start-run rely on them),
and are off unless a test turns them on."""

from __future__ import annotations

import http.client
import json
import time

import pytest

from mnistflow.local.kfp_api import Fault, LocalKfpApi

pytestmark = pytest.mark.integration
RUNS = "/apis/v2beta1/runs"
SPEC = {"pipelineInfo": {"name": "x"}, "root": {}}


def call(api: LocalKfpApi, method: str, path: str, body=None, timeout: float = 2.0):
    host, port = api.endpoint.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        connection.request(method, path, body=payload, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.fixture
def api():
    with LocalKfpApi() as server:
        experiment = server.handle("POST", "/apis/v2beta1/experiments", {}, {"display_name": "e"})
        server.run_body = {"experiment_id": experiment["experiment_id"], "display_name": "r",
                           "pipeline_spec": SPEC}  # fmt: skip
        yield server


def test_no_fault_unless_one_is_injected(api):
    status, raw = call(api, "POST", RUNS, api.run_body)
    assert status == 200 and json.loads(raw)["display_name"] == "r"


def test_status_answers_without_doing_the_work(api):
    api.inject(Fault("status", times=1, status=503))
    status, raw = call(api, "POST", RUNS, api.run_body)
    assert status == 503 and json.loads(raw)["code"] == 14
    assert api.runs == {}
    assert call(api, "POST", RUNS, api.run_body)[0] == 200  # once only


def test_lose_response_does_the_work_and_answers_nothing(api):
    api.inject(Fault("lose_response", method="POST", path=RUNS))
    with pytest.raises(http.client.RemoteDisconnected):
        call(api, "POST", RUNS, api.run_body)
    assert len(api.runs_named("r")) == 1


def test_commit_late_commits_after_the_client_gave_up(api):
    api.inject(Fault("commit_late", method="POST", path=RUNS, seconds=0.6))
    with pytest.raises(TimeoutError):
        call(api, "POST", RUNS, api.run_body, timeout=0.2)
    assert api.runs_named("r") == []  # not yet: a lookup now finds nothing
    deadline = time.monotonic() + 5
    while not api.runs_named("r") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(api.runs_named("r")) == 1


def test_body_answers_200_with_a_malformed_body(api):
    api.inject(Fault("body", body=b"<html>gateway</html>"))
    assert call(api, "POST", RUNS, api.run_body) == (200, b"<html>gateway</html>")
    assert api.runs == {}


def test_delay_then_serves(api):
    api.inject(Fault("delay", seconds=0.3))
    started = time.monotonic()
    assert call(api, "GET", RUNS)[0] == 200
    assert time.monotonic() - started >= 0.3


def test_drop_closes_without_an_answer(api):
    api.inject(Fault("drop"))
    with pytest.raises(http.client.RemoteDisconnected):
        call(api, "GET", RUNS)
