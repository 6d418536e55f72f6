"""Infrastructure tests: the CDK app synthesized once per context variant per session.

The Lambda asset is built once (pip results cached under build/); later synths reuse it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from aws_cdk.assertions import Template

from stacks.app_factory import MnistFlowStack, create_app
from stacks.lambda_asset import build_lambda_asset
from tests.infra.variants import CLUSTER_CONTEXT, EMAILS, PREBUILT_STEP_IMAGE, URL_MODE_CONTEXT

INFRA_DIR = Path(__file__).parent


def pytest_collection_modifyitems(items):
    for item in items:
        if INFRA_DIR in Path(item.path).parents:
            item.add_marker(pytest.mark.infra)


@dataclass(frozen=True)
class Synth:
    """One synthesized variant of the app."""

    stack: MnistFlowStack
    template: Template

    @property
    def assets(self) -> dict:
        """The cloud assembly's asset manifest (files and container images to publish)."""
        directory = Path(self.stack.node.root.synth().directory)
        return json.loads(
            (directory / self.stack.artifact_id).with_suffix(".assets.json").read_text()
        )

    @property
    def resources(self) -> dict:
        return self.template.to_json()["Resources"]

    def of_type(self, resource_type: str) -> dict[str, dict]:
        return {k: v for k, v in self.resources.items() if v["Type"] == resource_type}

    def logical_id(self, construct) -> str:
        return self.stack.get_logical_id(construct.node.default_child)


@pytest.fixture(scope="session")
def lambda_asset() -> Path:
    """The asset folder, built the way `cdk synth` builds it."""
    return build_lambda_asset()


def _synth(context: dict, asset: Path, outdir: Path) -> Synth:
    _, stack = create_app(context, outdir=str(outdir), lambda_code_folder=asset)
    return Synth(stack=stack, template=Template.from_stack(stack))


@pytest.fixture(scope="session")
def default_synth(lambda_asset, tmp_path_factory) -> Synth:
    """cdk.json's context (cluster mode) with two notification addresses."""
    return _synth(
        {**CLUSTER_CONTEXT, "notification_emails": list(EMAILS)},
        lambda_asset,
        tmp_path_factory.mktemp("cdk-default"),
    )


@pytest.fixture(scope="session")
def no_email_synth(lambda_asset, tmp_path_factory) -> Synth:
    return _synth(
        {**CLUSTER_CONTEXT, "notification_emails": []},
        lambda_asset,
        tmp_path_factory.mktemp("cdk-noemail"),
    )


@pytest.fixture(scope="session")
def url_mode_synth(lambda_asset, tmp_path_factory) -> Synth:
    """Direct-URL mode, Lambda in a VPC, no cluster name (so no Pod Identity association)."""
    return _synth(URL_MODE_CONTEXT, lambda_asset, tmp_path_factory.mktemp("cdk-url"))


@pytest.fixture(scope="session")
def custom_image_synth(lambda_asset, tmp_path_factory) -> Synth:
    """Images of the deployer's own: a training image instead of the built-in k-means, and a
    prebuilt step image instead of the one built at deploy."""
    return _synth(
        {
            **CLUSTER_CONTEXT,
            "training_image": "111122223333.dkr.ecr.eu-west-1.amazonaws.com/team/kmeans:2",
            "step_image": PREBUILT_STEP_IMAGE,
        },
        lambda_asset,
        tmp_path_factory.mktemp("cdk-image"),
    )


@pytest.fixture
def template(default_synth) -> Template:
    return default_synth.template
