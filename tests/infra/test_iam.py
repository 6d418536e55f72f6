"""IAM: the SageMaker execution role, the pipeline pods' role and the endpoint policy."""

from __future__ import annotations

import json

import pytest

from core.contracts import (
    PIPELINE_EVENT_BUS,
    PIPELINE_EVENT_SOURCE,
    RUN_KEY_TAG,
    SAGEMAKER_NAME_PREFIX,
)
from core.images import kmeans_registries
from stacks.retire_policy import LIST_ACTIONS
from tests.infra.cfn_text import actions_of, as_list, render, resources_of, role_statements
from tests.infra.test_model_registry import REGISTRY_SIDS
from tests.infra.variants import CLUSTER, CLUSTER_CONTEXT


@pytest.fixture(params=["default_synth", "no_email_synth", "url_mode_synth"])
def any_synth(request):
    return request.getfixturevalue(request.param)


def _role(synth, construct) -> tuple[dict, list[dict]]:
    role_id = synth.logical_id(construct.role)
    return synth.resources[role_id]["Properties"], role_statements(synth.resources, role_id)


def _trusted(role: dict) -> tuple[set[str], set[str]]:
    (statement,) = role["AssumeRolePolicyDocument"]["Statement"]
    return set(as_list(statement["Principal"]["Service"])), set(as_list(statement["Action"]))


def test_no_full_access_managed_policy_anywhere(any_synth):
    # Given the whole template as text, then no *FullAccess policy is referenced
    assert "FullAccess" not in json.dumps(any_synth.template.to_json())


def test_no_statement_allows_every_action_of_a_service(any_synth):
    statements = [
        statement
        for resource in any_synth.resources.values()
        if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")
        for statement in resource["Properties"]["PolicyDocument"]["Statement"]
    ]
    wide = {a for a in actions_of(statements) if a == "*" or a.endswith(":*")}
    assert wide == set()


def test_sagemaker_execution_role_is_for_sagemaker_and_scoped_to_the_bucket(default_synth):
    # Given the execution role
    role, statements = _role(default_synth, default_synth.stack.sagemaker_execution)
    bucket_id = default_synth.logical_id(default_synth.stack.data_bucket.bucket)
    # Then only SageMaker may assume it, and it attaches no managed policy
    assert _trusted(role) == ({"sagemaker.amazonaws.com"}, {"sts:AssumeRole"})
    assert "ManagedPolicyArns" not in role
    # And every S3 grant is on the data bucket, writes under runs/ only
    s3_statements = [
        s for s in statements if any(a.startswith("s3:") for a in as_list(s["Action"]))
    ]
    for statement in s3_statements:
        assert all(r.startswith("${" + bucket_id + ".Arn}") for r in resources_of(statement))
    (writes,) = [s for s in s3_statements if "s3:PutObject" in as_list(s["Action"])]
    assert resources_of(writes) == ["${" + bucket_id + ".Arn}/runs/*"]


def test_sagemaker_execution_role_logs_and_metrics_are_limited_to_sagemaker(default_synth):
    _, statements = _role(default_synth, default_synth.stack.sagemaker_execution)
    by_sid = {statement["Sid"]: statement for statement in statements}
    for resource in resources_of(by_sid["WriteSageMakerLogs"]):
        assert ":log-group:/aws/sagemaker/" in resource
    assert by_sid["PutSageMakerMetrics"]["Condition"]["StringLike"]["cloudwatch:namespace"]
    assert as_list(by_sid["AuthenticateToEcr"]["Action"]) == ["ecr:GetAuthorizationToken"]
    # And it pulls the k-means image from its region's AWS-owned account, looked up in a
    # mapping of every region core/kmeans_images.json knows, and from no other account
    (image_repository,) = as_list(by_sid["PullTheTrainingImage"]["Resource"])
    parts = image_repository["Fn::Join"][1]
    assert {"Fn::FindInMap": ["KmeansImageAccounts", {"Ref": "AWS::Region"}, "account"]} in parts
    assert parts[-1] == ":repository/kmeans"
    mapping = default_synth.template.to_json()["Mappings"]["KmeansImageAccounts"]
    assert {region: row["account"] for region, row in mapping.items()} == kmeans_registries()


def test_a_training_image_override_is_the_only_image_sagemaker_may_pull(custom_image_synth):
    _, statements = _role(custom_image_synth, custom_image_synth.stack.sagemaker_execution)
    (pull,) = [s for s in statements if s.get("Sid") == "PullTheTrainingImage"]
    assert resources_of(pull) == [
        "arn:${AWS::Partition}:ecr:eu-west-1:111122223333:repository/team/kmeans"
    ]
    assert "Mappings" not in custom_image_synth.template.to_json()


def test_only_this_accounts_sagemaker_may_assume_the_execution_role(default_synth):
    # Confused-deputy protection, as SageMaker's "Cross-service confused deputy prevention" page
    # gives it for a role that serves training, transform and inference alike
    role, _ = _role(default_synth, default_synth.stack.sagemaker_execution)
    (statement,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    assert statement["Condition"] == {
        "ArnLike": {
            "aws:SourceArn": {
                "Fn::Join": [
                    "",
                    [
                        "arn:",
                        {"Ref": "AWS::Partition"},
                        ":sagemaker:",
                        {"Ref": "AWS::Region"},
                        ":",
                        {"Ref": "AWS::AccountId"},
                        ":*",
                    ],
                ]
            }
        },
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
    }


def test_pipeline_pods_role_is_assumed_through_pod_identity(default_synth):
    role, _ = _role(default_synth, default_synth.stack.pipeline_pods)
    assert _trusted(role) == ({"pods.eks.amazonaws.com"}, {"sts:AssumeRole", "sts:TagSession"})


def test_pipeline_pods_call_sagemaker_on_this_products_resources_only(default_synth):
    # Given the pods' SageMaker statements
    _, statements = _role(default_synth, default_synth.stack.pipeline_pods)
    sagemaker = [
        s
        for s in statements
        if any(a.startswith("sagemaker:") for a in as_list(s["Action"]))
        and s["Sid"] not in REGISTRY_SIDS  # the model registry's: test_model_registry.py
    ]
    # Then every resource is a product-named SageMaker resource, but the List* calls of the
    # retirement, which take no resource (stacks/retire_policy.py)
    listing = [st for st in sagemaker if st.get("Sid") == "ListSageMakerResources"]
    assert [set(as_list(st["Action"])) for st in listing] == [set(LIST_ACTIONS)]
    resources = [
        resource
        for statement in sagemaker
        if statement not in listing
        for resource in resources_of(statement)
    ]
    assert resources
    for resource in resources:
        assert ":sagemaker:" in resource and resource.endswith(f"/{SAGEMAKER_NAME_PREFIX}*")
    # And the actions are what the pipeline does: create, wait, stop, update, tag
    assert {"sagemaker:CreateTrainingJob", "sagemaker:UpdateEndpoint", "sagemaker:AddTags"} <= (
        actions_of(sagemaker)
    )
    # Deletes only in the retirement's statement, on resources carrying the run-key tag
    deleting = [
        st
        for st in sagemaker
        if any(a.startswith("sagemaker:Delete") for a in as_list(st["Action"]))
    ]
    assert [st["Sid"] for st in deleting] == ["DeleteTaggedProductSageMakerResources"]
    assert deleting[0]["Condition"] == {"Null": {f"aws:ResourceTag/{RUN_KEY_TAG}": "false"}}


def test_pipeline_pods_pass_only_the_execution_role_and_only_to_sagemaker(default_synth):
    _, statements = _role(default_synth, default_synth.stack.pipeline_pods)
    (pass_role,) = [s for s in statements if "iam:PassRole" in as_list(s["Action"])]
    execution_id = default_synth.logical_id(default_synth.stack.sagemaker_execution.role)
    assert resources_of(pass_role) == ["${" + execution_id + ".Arn}"]
    assert pass_role["Condition"] == {
        "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}
    }


def test_pipeline_pods_read_the_bucket_and_write_under_runs_and_models_only(default_synth):
    _, statements = _role(default_synth, default_synth.stack.pipeline_pods)
    bucket_arn = "${" + default_synth.logical_id(default_synth.stack.data_bucket.bucket) + ".Arn}"
    s3 = [s for s in statements if any(a.startswith("s3:") for a in as_list(s["Action"]))]
    writes = [s for s in s3 if "s3:PutObject" in as_list(s["Action"])]
    assert sorted(r for s in writes for r in resources_of(s)) == [
        f"{bucket_arn}/models/*",
        f"{bucket_arn}/runs/*",
    ]
    # The promoted copy carries its run-key tag (a PutObject with tags needs PutObjectTagging)
    (promote,) = [s for s in writes if resources_of(s) == [f"{bucket_arn}/models/*"]]
    assert set(as_list(promote["Action"])) == {"s3:PutObject", "s3:PutObjectTagging"}
    assert {"s3:GetObject", "s3:ListBucket"} <= actions_of(s3)
    for statement in s3:
        assert all(resource.startswith(bucket_arn) for resource in resources_of(statement))


def test_endpoint_policy_invokes_this_products_endpoints_only(default_synth):
    policy_id = default_synth.logical_id(default_synth.stack.endpoint_invoke.policy)
    (statement,) = default_synth.resources[policy_id]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Action"] == "sagemaker:InvokeEndpoint"
    assert render(statement["Resource"]) == (
        "arn:${AWS::Partition}:sagemaker:${AWS::Region}:${AWS::AccountId}:"
        f"endpoint/{SAGEMAKER_NAME_PREFIX}*"
    )


def test_pipeline_pods_may_put_only_the_pipelines_events_and_only_on_its_own_bus(default_synth):
    # Given the pods' EventBridge statements
    _, statements = _role(default_synth, default_synth.stack.pipeline_pods)
    events = [s for s in statements if any(a.startswith("events:") for a in as_list(s["Action"]))]
    # Then there is one: PutEvents on the product's pipeline bus
    (put_events,) = events
    bus_id = default_synth.logical_id(default_synth.stack.progress_rules.pipeline_bus)
    assert as_list(put_events["Action"]) == ["events:PutEvents"]
    assert resources_of(put_events) == ["${" + bus_id + ".Arn}"]
    # And every entry of a request must carry the pipeline's source, which must be present
    assert put_events["Condition"] == {
        "ForAllValues:StringEquals": {"events:source": [PIPELINE_EVENT_SOURCE]},
        "Null": {"events:source": "false"},
    }


def test_the_pipeline_bus_denies_putting_events_to_everyone_but_the_pods(default_synth):
    # Within one account an identity allow is enough ("Policy evaluation for requests within a
    # single account"): only an explicit deny on the bus keeps other principals out.
    bus_id = default_synth.logical_id(default_synth.stack.progress_rules.pipeline_bus)
    bus = default_synth.resources[bus_id]["Properties"]
    assert bus["Name"] == PIPELINE_EVENT_BUS
    (deny,) = bus["Policy"]["Statement"]
    pods_role = default_synth.logical_id(default_synth.stack.pipeline_pods.role)
    assert (deny["Effect"], deny["Principal"], deny["Action"]) == (
        "Deny",
        {"AWS": "*"},
        "events:PutEvents",
    )
    assert deny["Condition"] == {
        "ArnNotEquals": {"aws:PrincipalArn": {"Fn::GetAtt": [pods_role, "Arn"]}}
    }
    assert render(deny["Resource"]).endswith(f":event-bus/{PIPELINE_EVENT_BUS}")


def test_pods_create_sagemaker_jobs_on_allowed_instance_types_only(default_synth):
    _, statements = _role(default_synth, default_synth.stack.pipeline_pods)
    by_sid = {statement["Sid"]: statement for statement in statements}
    creates = by_sid["CreateProductSageMakerResourcesOnAllowedInstances"]
    assert set(as_list(creates["Action"])) == {
        "sagemaker:CreateTrainingJob",
        "sagemaker:CreateTransformJob",
        "sagemaker:CreateEndpointConfig",
    }
    assert creates["Condition"] == {
        "ForAllValues:StringEquals": {"sagemaker:InstanceTypes": ["ml.m5.large"]},
        "Null": {"sagemaker:InstanceTypes": "false"},
    }
    others = {a for s in statements for a in as_list(s["Action"]) if s is not creates}
    assert not others & set(as_list(creates["Action"]))
    # ListTags: a retried deploy step reads its endpoint config's rolled-back tag
    assert "sagemaker:ListTags" in others
    # and the retire policy's reading of the run-key tag (stacks/retire_policy.py)
    readers = [st["Sid"] for st in statements if "sagemaker:ListTags" in as_list(st["Action"])]
    assert "ReadProductSageMakerResources" in readers


def test_serverless_endpoint_configs_may_be_created_without_an_instance_type(
    lambda_asset, tmp_path_factory, default_synth
):
    # Given a stack whose endpoint is serverless: its CreateEndpointConfig names no instance
    # type, so sagemaker:InstanceTypes is absent (service authorization reference: the key holds
    # the request's instance types), and the instance statement's Null check would deny it
    from tests.infra.conftest import _synth

    serverless = _synth(
        {**CLUSTER_CONTEXT, "endpoint_type": "serverless"},
        lambda_asset,
        tmp_path_factory.mktemp("cdk-serverless"),
    )
    _, statements = _role(serverless, serverless.stack.pipeline_pods)
    by_sid = {statement["Sid"]: statement for statement in statements}
    grant = by_sid["CreateProductServerlessEndpointConfigs"]
    assert as_list(grant["Action"]) == ["sagemaker:CreateEndpointConfig"]
    assert grant["Condition"] == {"Null": {"sagemaker:InstanceTypes": "true"}}
    assert render(grant["Resource"]) == render(
        by_sid["CreateProductSageMakerResourcesOnAllowedInstances"]["Resource"]
    )
    # And an instance stack has no such grant
    _, default = _role(default_synth, default_synth.stack.pipeline_pods)
    assert "CreateProductServerlessEndpointConfigs" not in {st["Sid"] for st in default}


def test_only_the_pods_service_account_of_the_cluster_may_assume_their_role(default_synth):
    # EKS user guide, "Create IAM role with trust policy required by EKS Pod Identity": Pod
    # Identity sends the pod's cluster, namespace and service account as session tags
    role, _ = _role(default_synth, default_synth.stack.pipeline_pods)
    (statement,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Condition"] == {
        "StringEquals": {
            "aws:RequestTag/kubernetes-namespace": "kubeflow",
            "aws:RequestTag/kubernetes-service-account": "mnistflow-pipeline",
            "aws:RequestTag/eks-cluster-name": CLUSTER,
        }
    }


def test_the_user_policy_grants_what_the_users_commands_call_and_nothing_more(default_synth):
    # Given the policy for the people who use the product
    policy_id = default_synth.logical_id(default_synth.stack.user_policy.policy)
    statements = default_synth.resources[policy_id]["Properties"]["PolicyDocument"]["Statement"]
    granted = {
        (action, render(resource))
        for statement in statements
        for action in as_list(statement["Action"])
        for resource in as_list(statement["Resource"])
    }
    bucket = "${" + default_synth.logical_id(default_synth.stack.data_bucket.bucket) + ".Arn}"
    table = "${" + default_synth.logical_id(default_synth.stack.runs_table.table) + ".Arn}"
    sagemaker = "arn:${AWS::Partition}:sagemaker:${AWS::Region}:${AWS::AccountId}"
    # Then it is exactly: upload and rerun under incoming/ (aws s3 cp, mnistflow rerun), list
    # the uploads, read the evaluations and the run records (status), and what predict calls
    assert granted == {
        ("s3:PutObject", f"{bucket}/incoming/*"),
        ("s3:GetObject", f"{bucket}/incoming/*"),
        ("s3:GetObjectVersion", f"{bucket}/incoming/*"),
        ("s3:PutObjectTagging", f"{bucket}/incoming/*"),
        ("s3:GetObjectVersionTagging", f"{bucket}/incoming/*"),
        ("s3:ListBucket", bucket),
        ("s3:ListBucketVersions", bucket),
        ("s3:GetObject", f"{bucket}/runs/*/evaluation.json"),
        ("dynamodb:GetItem", table),
        ("dynamodb:Scan", table),
        ("sagemaker:InvokeEndpoint", f"{sagemaker}:endpoint/{SAGEMAKER_NAME_PREFIX}*"),
        ("sagemaker:DescribeEndpoint", f"{sagemaker}:endpoint/{SAGEMAKER_NAME_PREFIX}*"),
        (
            "sagemaker:DescribeEndpointConfig",
            f"{sagemaker}:endpoint-config/{SAGEMAKER_NAME_PREFIX}*",
        ),
        ("sagemaker:DescribeModel", f"{sagemaker}:model/{SAGEMAKER_NAME_PREFIX}*"),
        # status prices the run; GetProducts has no resource type (Service Authorization Ref.)
        ("pricing:GetProducts", "*"),
    }
    # and listing is limited to the uploads' prefix
    (listing,) = [s for s in statements if s.get("Sid") == "ListUploads"]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["incoming/*"]}}


def test_pipeline_pods_scale_the_stable_endpoint_as_the_autoscaling_guide_requires(default_synth):
    # SageMaker developer guide, "Auto scaling prerequisites" (Permissions, Service-linked role)
    _, statements = _role(default_synth, default_synth.stack.pipeline_pods)
    by_sid = {s.get("Sid"): s for s in statements}
    scaling = by_sid["ScaleTheStableEndpoint"]
    assert {a.split(":")[0] for a in as_list(scaling["Action"])} == {"application-autoscaling"}
    assert {
        "application-autoscaling:RegisterScalableTarget",
        "application-autoscaling:PutScalingPolicy",
    } <= set(as_list(scaling["Action"]))
    linked = by_sid["CreateTheAutoScalingServiceLinkedRole"]
    assert as_list(linked["Action"]) == ["iam:CreateServiceLinkedRole"]
    assert resources_of(linked) == [
        "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/aws-service-role/"
        "sagemaker.application-autoscaling.amazonaws.com/"
        "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
    ]
    assert linked["Condition"] == {
        "StringLike": {"iam:AWSServiceName": "sagemaker.application-autoscaling.amazonaws.com"}
    }
    alarms = by_sid["ManageTargetTrackingAlarms"]
    assert resources_of(alarms) == [
        "arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}:alarm:TargetTracking-*"
    ]
    assert "sagemaker:UpdateEndpointWeightsAndCapacities" in actions_of(statements)


def test_the_guardrails_may_read_the_rollback_alarms_and_nothing_else(default_synth):
    # Developer guide, "Auto-Rollback Configuration and Monitoring": cloudwatch:DescribeAlarms
    # on the auto-rollback alarms
    expected = [
        "arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}:alarm:"
        f"mnistflow-mnist-classifier-{suffix}"
        for suffix in ("errors", "latency")
    ]
    for role in (default_synth.stack.pipeline_pods, default_synth.stack.sagemaker_execution):
        _, statements = _role(default_synth, role)
        (read,) = [s for s in statements if s.get("Sid") == "ReadTheRollbackAlarms"]
        assert as_list(read["Action"]) == ["cloudwatch:DescribeAlarms"]
        assert resources_of(read) == expected
