"""The Kubernetes objects cluster mode needs, as `mnistflow kubernetes-manifest` prints them.

Facts pinned here, with their sources:
- The API server authorizes a request through a service proxy as the verb of its HTTP method:
  GET -> `get`, POST -> `create` (kubernetes, staging/src/k8s.io/apiserver/pkg/endpoints/request/
  requestinfo.go), on the subresource `services/proxy`, named `<scheme>:<service>:<port>` as in
  the proxy path (docs: "Manually constructing apiserver proxy URLs").
- KFP's runner rights are a namespaced Role `pipeline-runner` (kubeflow/pipelines
  manifests/kustomize/base/pipeline/pipeline-runner-role.yaml, 2.14.0: `kind: Role`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from core import contracts, kfp
from core.settings import cdk_json_context, read_context
from mnistflow.cli import main
from mnistflow.kubernetes import manifest, objects

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "deploy" / "kubernetes" / "mnistflow.yaml"
CLUSTER = {"eks_cluster_name": "my-cluster"}


def _settings(**context):
    return read_context({**cdk_json_context(), **CLUSTER, **context})


def _by_kind(documents):
    found = {}
    for document in documents:
        found.setdefault(document["kind"], []).append(document)
    return found


def test_the_shipped_manifest_is_what_the_command_prints_for_cdk_jsons_defaults():
    assert SHIPPED.read_text() == manifest(_settings())


def test_start_run_may_only_get_and_post_through_kfps_api_proxy():
    # Given the objects for cdk.json's defaults
    kinds = _by_kind(objects(_settings()))
    (role,) = [r for r in kinds["Role"] if r["metadata"]["name"] == "mnistflow-start-run"]
    # Then the Role allows get (GET) and create (POST) on ml-pipeline's proxy, nothing else
    assert role["metadata"]["namespace"] == "kubeflow"
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["services/proxy"],
            "resourceNames": ["ml-pipeline:http"],
            "verbs": ["get", "create"],
        }
    ]
    # And it is bound to the Kubernetes group of start-run's access entry, only
    binding = next(
        b for b in kinds["RoleBinding"] if b["roleRef"]["name"] == role["metadata"]["name"]
    )
    assert binding["subjects"] == [
        {
            "kind": "Group",
            "apiGroup": "rbac.authorization.k8s.io",
            "name": contracts.START_RUN_KUBERNETES_GROUP,
        }
    ]
    # And the name is the one start-run's requests go through
    assert f"/services/{role['rules'][0]['resourceNames'][0]}/proxy" in kfp.service_proxy_path(
        "kubeflow", "http"
    )


def test_the_pipelines_pods_get_their_own_service_account_with_kfps_runner_rights():
    settings = _settings()
    kinds = _by_kind(objects(settings))
    (account,) = kinds["ServiceAccount"]
    assert account["metadata"] == {"name": settings.kfp_service_account, "namespace": "kubeflow"}
    binding = next(b for b in kinds["RoleBinding"] if b["roleRef"]["name"] == "pipeline-runner")
    assert binding["roleRef"]["kind"] == "Role"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "mnistflow-pipeline", "namespace": "kubeflow"}
    ]


def test_the_tls_port_namespace_and_service_account_follow_the_context():
    settings = _settings(kfp_service_port="tls", kfp_namespace="ml", kfp_service_account="sa-1")
    documents = objects(settings)
    assert {d["metadata"]["namespace"] for d in documents} == {"ml"}
    (role,) = [d for d in documents if d["kind"] == "Role"]
    assert role["rules"][0]["resourceNames"] == ["https:ml-pipeline:tls"]
    assert any(d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "sa-1" for d in documents)


def test_url_mode_needs_nothing_in_the_cluster():
    settings = _settings(
        kfp_mode="url", kfp_url="https://kfp.example.com", kfp_token_secret_name="kfp/token"
    )
    assert objects(settings) == [] and manifest(settings) == ""


def test_the_command_prints_a_stream_kubectl_can_apply(capsys):
    assert main(["kubernetes-manifest", "-c", "eks_cluster_name=c", "-c", "kfp_namespace=ml"]) == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    assert len(documents) == 4 and {d["metadata"]["namespace"] for d in documents} == {"ml"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "eks_cluster_name': is still cdk.json's placeholder"),
        (["-c", "eks_cluster_name"], "-c takes key=value"),
        (["-c", "eks_cluster_name=c", "-c", "kfp-namespace=ml"], "did you mean 'kfp_namespace'"),
        (["-c", "eks_cluster_name=c", "-c", "kfp_service_port=HTTP"], "kfp_service_port"),
    ],
)
def test_bad_context_is_refused_naming_the_key_and_prints_nothing(capsys, args, message):
    assert main(["kubernetes-manifest", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err
