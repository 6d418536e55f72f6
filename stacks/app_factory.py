"""Builds the CDK app: the context read through the settings schema, one stack, cdk-nag on top."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import App, Aspects, Environment
from cdk_nag import AwsSolutionsChecks, ServerlessChecks

from core.settings import cdk_json_context, read_context
from stacks.lambda_asset import build_lambda_asset
from stacks.mnist_flow_stack import MnistFlowStack
from stacks.names import STACK_ID

# The cdk-nag rule packs every synth runs; a finding is fixed, or suppressed with a reason.
NAG_PACKS = (AwsSolutionsChecks, ServerlessChecks)
# The prefixes their findings carry (cdk-nag names a rule `<pack name>-<rule>`).
NAG_PREFIXES = ("AwsSolutions-", "Serverless-")


def create_app(
    context: Mapping[str, Any] | None = None,
    *,
    outdir: str | None = None,
    lambda_code_folder: Path | None = None,
) -> tuple[App, MnistFlowStack]:
    """Build the app: validate the context, build the Lambda asset, add the stack and cdk-nag.

    cdk.json's context is the base (so `python app.py` works without the CLI), the CLI's
    context (`-c`) overrides it, and `context` here overrides both. Raises
    core.settings.SettingError, naming the key, before anything is built.
    """
    app = App(context=cdk_json_context(), post_cli_context=dict(context or {}), outdir=outdir)
    settings = read_context(app.node.get_all_context())
    stack = MnistFlowStack(
        app,
        STACK_ID,
        settings=settings,
        lambda_code_folder=lambda_code_folder or build_lambda_asset(),
        env=_environment(),
    )
    for pack in NAG_PACKS:
        Aspects.of(app).add(pack(verbose=True))
    return app, stack


def _environment() -> Environment | None:
    """Pin account/region when the CLI knows them; otherwise synthesize environment-agnostic."""
    account = os.environ.get("CDK_DEFAULT_ACCOUNT")
    region = os.environ.get("CDK_DEFAULT_REGION")
    return Environment(account=account, region=region) if account and region else None
