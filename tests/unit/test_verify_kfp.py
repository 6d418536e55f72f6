"""`mnistflow verify`'s kfp line for each answer start-run's dry run can give: the answer is the
real one (lambdas.logic.kfp_check on the ScriptedKfp fake, in the mode the function is
deployed with), read by verify as Lambda's Invoke returns it."""

from __future__ import annotations

import pytest

from core import contracts, kfp
from lambdas.logic.kfp_check import check_kfp
from lambdas.logic.ports import KfpCallFailed
from mnistflow.verify import _kfp
from tests.fakes import ScriptedKfp
from tests.fakes.aws_deployed import FakeLambda
from tests.fakes.settings import function_settings

FUNCTION = "MnistFlow-StartRun"
OUTPUTS = {contracts.OUTPUT_START_RUN_FUNCTION: FUNCTION}
CLUSTER = {"kfp_mode": "cluster", "eks_cluster_name": "prod", "kfp_namespace": "kubeflow"}


def _line(kfp_api: ScriptedKfp, **values) -> str:
    settings = function_settings(contracts.START_RUN, **values)
    answer = check_kfp(kfp_api, settings, "what to check")
    lambda_ = FakeLambda({FUNCTION: lambda event, context: answer})
    return _kfp(lambda service: lambda_, OUTPUTS).line()


@pytest.mark.parametrize(
    ("call", "status", "fix"),
    [
        (
            "health",
            403,
            "the Role and RoleBinding for group mnistflow-start-run are missing in kubeflow:"
            " ./dev kubernetes-manifest | kubectl apply -f -",
        ),
        ("health", 401, "the cluster refused start-run's token: see the access entries check"),
        ("find_experiments", 404, "no ml-pipeline service with port http in kubeflow"),
        ("health", 503, "the API server could not reach the ml-pipeline pod"),
    ],
)
def test_in_cluster_mode_each_refusal_names_its_fix(call, status, fix):
    kfp_api = ScriptedKfp()
    kfp_api.fail_with_status(call, status)
    line = _line(kfp_api, **CLUSTER)
    assert line.startswith("FAIL  kfp: start-run cannot use KFP (cluster prod, namespace kubeflow)")
    assert f"HTTP {status}" in line and fix in line


def test_a_cluster_endpoint_that_cannot_be_reached_names_its_cidrs():
    kfp_api = ScriptedKfp()
    kfp_api.failures.append(
        ("health", KfpCallFailed(KfpCallFailed.TRANSIENT, "GET /apis/v2beta1/healthz: timed out"))
    )
    assert _line(kfp_api, **CLUSTER).endswith(
        "its public endpoint must admit 0.0.0.0/0 (aws eks describe-cluster --name prod --query"
        " cluster.resourcesVpcConfig.publicAccessCidrs), or set vpc_id and subnet_ids"
    )


def test_a_backend_older_than_the_minimum_says_to_upgrade():
    line = _line(ScriptedKfp(backend_version="2.5.0"), **CLUSTER)
    assert line == (
        f"FAIL  kfp: KFP 2.5.0 is older than {kfp.MIN_BACKEND_VERSION}, which the pipeline's exit"
        f" handler needs: upgrade Kubeflow Pipelines to {kfp.MIN_BACKEND_VERSION} or later"
    )


def test_a_multi_user_kfp_in_cluster_mode_says_to_use_url_mode():
    class MultiUser(ScriptedKfp):
        def health(self):
            found = super().health()
            return type(found)(found.version, multi_user=True)

    line = _line(MultiUser(), **CLUSTER)
    assert line.startswith("FAIL  kfp: KFP 2.14.0 is multi-user, which cluster mode cannot reach")
    assert "-c kfp_mode=url" in line


def test_a_kfp_that_answers_names_its_release_and_the_experiment():
    kfp_api = ScriptedKfp()
    experiment = kfp_api.create_experiment("mnist", "")
    assert _line(kfp_api, **CLUSTER) == (
        "ok    kfp: start-run reached KFP 2.14.0 (cluster prod, namespace kubeflow); experiment"
        f" mnist is {experiment.experiment_id}"
    )


def test_a_function_error_on_the_dry_run_points_at_its_logs():
    def broken(event, context):
        raise RuntimeError("KFP_URL is not set")

    lambda_ = FakeLambda({FUNCTION: broken})
    assert _kfp(lambda service: lambda_, OUTPUTS).line() == (
        "FAIL  kfp: start-run failed on the dry run (RuntimeError: KFP_URL is not set): see its"
        " log group"
    )
