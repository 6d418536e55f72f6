"""Cluster access: the start-run Lambda's access entry and the pipeline pods' Pod Identity."""

from __future__ import annotations

from core.settings import cdk_json_context, read_context
from tests.infra.cfn_text import render


def test_start_run_role_gets_an_access_entry_limited_to_the_kfp_namespace(default_synth):
    # Given cluster mode and the namespace from cdk.json
    context = read_context(cdk_json_context())
    role_id = default_synth.logical_id(default_synth.stack.start_run.function.role)
    # When reading the access entries
    (entry,) = default_synth.of_type("AWS::EKS::AccessEntry").values()
    properties = entry["Properties"]
    # Then the start-run role has one, on the configured cluster, with a namespace-scoped policy
    assert properties["PrincipalArn"] == {"Fn::GetAtt": [role_id, "Arn"]}
    assert properties["ClusterName"] == context["eks_cluster_name"]
    assert properties["Type"] == "STANDARD"
    (policy,) = properties["AccessPolicies"]
    assert render(policy["PolicyArn"]).endswith(
        ":eks::aws:cluster-access-policy/AmazonEKSEditPolicy"
    )
    assert policy["AccessScope"] == {"Type": "namespace", "Namespaces": [context["kfp_namespace"]]}


def test_pipeline_runner_service_account_gets_the_pod_role(default_synth):
    # Given the context's cluster, namespace and service account
    context = read_context(cdk_json_context())
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
