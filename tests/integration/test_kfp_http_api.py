"""The KFP adapter (lambdas.dal.kfp_api) against the local KFP API: every call of the port, and
get_run, which the stuck-run watchdog will use."""

from __future__ import annotations

import pytest

from lambdas.dal.kfp_api import KfpHttpApi
from lambdas.logic.ports import KfpCallFailed
from mnistflow.local.kfp_api import LocalKfpApi

pytestmark = pytest.mark.integration
TOKEN = "a-token"  # noqa: S105
SPEC = {"pipelineInfo": {"name": "mnist"}, "root": {}}


class Token:
    def bearer_token(self) -> str:
        return TOKEN

    def invalidate(self) -> None:
        pass


@pytest.fixture
def api():
    with LocalKfpApi(accept_token=TOKEN) as server:
        yield server, KfpHttpApi(lambda: server.url, Token(), timeout_seconds=2)


def test_experiments_and_runs_round_trip(api):
    server, kfp = api
    experiment = kfp.create_experiment("mnist", "runs of uploads")
    assert kfp.find_experiments("mnist") == [experiment]
    assert kfp.find_experiments("other") == []
    run = kfp.create_run(experiment.experiment_id, "mnist-0123456789ab", "d", SPEC, {"k": 10})
    assert kfp.find_runs(experiment.experiment_id, "mnist-0123456789ab") == [run]
    assert server.runs[run.run_id]["runtime_config"] == {"parameters": {"k": 10}}


def test_get_run_reads_one_run_by_id(api):
    _, kfp = api
    experiment = kfp.create_experiment("mnist", "")
    run = kfp.create_run(experiment.experiment_id, "mnist-0123456789ab", "", SPEC, {})
    assert kfp.get_run(run.run_id) == run


def test_get_run_of_an_unknown_id_is_not_found(api):
    _, kfp = api
    with pytest.raises(KfpCallFailed) as failed:
        kfp.get_run("no-such-run")
    assert failed.value.kind == KfpCallFailed.NOT_FOUND and failed.value.status == 404
