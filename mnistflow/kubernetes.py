"""What the product needs inside a standalone KFP cluster (cluster mode), as Kubernetes objects:

- a Role and RoleBinding that let start-run's access-entry group (core.contracts.
  START_RUN_KUBERNETES_GROUP) `get` and `create` on `services/proxy` of KFP's `ml-pipeline`
  service, and nothing else: Kubernetes authorizes a GET through the API server's service proxy
  as `get` and a POST as `create` (k8s.io/apiserver requestinfo.go); the name is the proxy
  path's `ml-pipeline:<port>` (or `https:ml-pipeline:<port>`) segment;
- the service account the pipeline's pods run as (start-run names it on every run), bound to
  KFP's own runner Role (`pipeline-runner`, manifests/kustomize/base/pipeline), so the pods keep
  the rights KFP gives its runner and the Pod Identity role reaches these pods only.

`mnistflow kubernetes-manifest | kubectl apply -f -` applies them; deploy/kubernetes/
mnistflow.yaml is the same for cdk.json's defaults. Multi-user Kubeflow (url mode) needs none:
the profile's namespace and its `default-editor` service account exist already.
"""

from __future__ import annotations

from typing import Any

import yaml

from core import kfp
from core.contracts import KFP_MODE_CLUSTER, KFP_RUNNER_ROLE, START_RUN_KUBERNETES_GROUP
from core.settings import Settings

RBAC_API = "rbac.authorization.k8s.io"


def objects(settings: Settings) -> list[dict[str, Any]]:
    """The objects to apply for these settings; none in url mode."""
    if settings.kfp_mode != KFP_MODE_CLUSTER:
        return []
    namespace = settings.kfp_namespace
    account = settings.kfp_service_account
    return [
        {
            "apiVersion": f"{RBAC_API}/v1",
            "kind": "Role",
            "metadata": {"name": START_RUN_KUBERNETES_GROUP, "namespace": namespace},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["services/proxy"],
                    "resourceNames": [kfp.service_proxy_name(settings.kfp_service_port)],
                    "verbs": ["get", "create"],
                }
            ],
        },
        {
            "apiVersion": f"{RBAC_API}/v1",
            "kind": "RoleBinding",
            "metadata": {"name": START_RUN_KUBERNETES_GROUP, "namespace": namespace},
            "subjects": [
                {"kind": "Group", "apiGroup": RBAC_API, "name": START_RUN_KUBERNETES_GROUP}
            ],
            "roleRef": {"kind": "Role", "apiGroup": RBAC_API, "name": START_RUN_KUBERNETES_GROUP},
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": account, "namespace": namespace},
        },
        {
            "apiVersion": f"{RBAC_API}/v1",
            "kind": "RoleBinding",
            "metadata": {"name": f"{account}-{KFP_RUNNER_ROLE}", "namespace": namespace},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
            "roleRef": {"kind": "Role", "apiGroup": RBAC_API, "name": KFP_RUNNER_ROLE},
        },
    ]


def manifest(settings: Settings) -> str:
    """The objects as one YAML stream (empty in url mode)."""
    header = "# Rendered by `mnistflow kubernetes-manifest`; apply with kubectl apply -f -\n"
    documents = objects(settings)
    return header + yaml.safe_dump_all(documents, sort_keys=False) if documents else ""
