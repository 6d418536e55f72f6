"""The model registry: one model package group per stack, and the pods' grants on it alone."""

from __future__ import annotations

from core.contracts import MODEL_PACKAGE_GROUP, MODEL_PACKAGE_GROUP_DESCRIPTION
from tests.infra.cfn_text import as_list, render, resources_of, role_statements

REGISTRY_SIDS = ("RegisterModelVersions", "RegisterInTheProductGroup", "FindARunsModelVersion")


def test_the_stack_has_one_model_package_group_kept_with_its_versions(default_synth):
    groups = default_synth.of_type("AWS::SageMaker::ModelPackageGroup")
    [(_, group)] = groups.items()
    assert group["Properties"] == {
        "ModelPackageGroupName": MODEL_PACKAGE_GROUP,
        "ModelPackageGroupDescription": MODEL_PACKAGE_GROUP_DESCRIPTION,
    }
    # The versions record what was evaluated and served: the group outlives the stack
    assert group["DeletionPolicy"] == "RetainExceptOnCreate"
    assert group["UpdateReplacePolicy"] == "Retain"


def test_the_pods_register_and_settle_versions_of_the_products_group_only(default_synth):
    pods = default_synth.logical_id(default_synth.stack.pipeline_pods.role)
    by_sid = {s["Sid"]: s for s in role_statements(default_synth.resources, pods)}
    sagemaker = "arn:${AWS::Partition}:sagemaker:${AWS::Region}:${AWS::AccountId}"
    versions = by_sid["RegisterModelVersions"]
    assert set(as_list(versions["Action"])) == {
        "sagemaker:CreateModelPackage",
        "sagemaker:DescribeModelPackage",
        "sagemaker:UpdateModelPackage",
        "sagemaker:AddTags",
    }
    assert [render(r) for r in resources_of(versions)] == [
        f"{sagemaker}:model-package/{MODEL_PACKAGE_GROUP}/*"
    ]
    group = by_sid["RegisterInTheProductGroup"]
    assert [render(r) for r in resources_of(group)] == [
        f"{sagemaker}:model-package-group/{MODEL_PACKAGE_GROUP}"
    ]
    # Listing has no resource-level permission: granted alone, read-only
    listing = by_sid["FindARunsModelVersion"]
    assert as_list(listing["Action"]) == ["sagemaker:ListModelPackages"]
    assert resources_of(listing) == ["*"]
    # Nothing deletes a version or the group
    actions = {a for sid in REGISTRY_SIDS for a in as_list(by_sid[sid]["Action"])}
    assert not {a for a in actions if "Delete" in a}
