"""Cluster access: the start-run Lambda's access entry and the pipeline pods' Pod Identity."""

from __future__ import annotations

from core.contracts import START_RUN_KUBERNETES_GROUP
from core.settings import cdk_json_context, read_context
from tests.infra.variants import CLUSTER, CLUSTER_CONTEXT


def test_kfp_callers_get_an_access_entry_in_the_kubernetes_group_and_no_access_policy(
    default_synth,
):
    # Given cluster mode, and the two functions that call KFP's API
    stack = default_synth.stack
    roles = {
        default_synth.logical_id(function.function.role)
        for function in (stack.start_run, stack.watchdog)
    }
    # When reading the access entries
    entries = default_synth.of_type("AWS::EKS::AccessEntry").values()
    # Then each role is in one Kubernetes group, which the namespaced Role of
    # `mnistflow kubernetes-manifest` authorizes, and holds no AWS-managed access policy (Edit,
    # the narrowest with services/proxy, also allows secrets and pods/exec)
    assert {e["Properties"]["PrincipalArn"]["Fn::GetAtt"][0] for e in entries} == roles
    for entry in entries:
        properties = entry["Properties"]
        assert properties["ClusterName"] == CLUSTER
        assert properties["Type"] == "STANDARD"
        assert properties["KubernetesGroups"] == [START_RUN_KUBERNETES_GROUP]
        assert "AccessPolicies" not in properties


def test_pipeline_runner_service_account_gets_the_pod_role(default_synth):
    # Given the context's cluster, namespace and service account
    context = read_context({**cdk_json_context(), **CLUSTER_CONTEXT})
    pod_role_id = default_synth.logical_id(default_synth.stack.pipeline_pods.role)
    # When reading the Pod Identity associations
    (association,) = default_synth.of_type("AWS::EKS::PodIdentityAssociation").values()
    # Then the runner's service account is bound to the pods' role
    assert association["Properties"] == {
        "ClusterName": context["eks_cluster_name"],
        "Namespace": context["kfp_namespace"],
        "ServiceAccount": context["kfp_service_account"],
        "RoleArn": {"Fn::GetAtt": [pod_role_id, "Arn"]},
    }


def test_without_a_cluster_name_there_is_no_association_but_the_role_exists(url_mode_synth):
    url_mode_synth.template.resource_count_is("AWS::EKS::PodIdentityAssociation", 0)
    assert url_mode_synth.logical_id(url_mode_synth.stack.pipeline_pods.role) in (
        url_mode_synth.resources
    )
