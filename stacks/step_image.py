"""The image every pipeline step runs in: built from pipeline/image at deploy, or given.

`cdk deploy` builds pipeline/image/Dockerfile for linux/amd64 (EKS's common node architecture)
and pushes it to the CDK's container asset repository, whose tags are immutable
(aws/aws-cdk-cli, packages/aws-cdk/lib/api/bootstrap/bootstrap-template.yaml:
ContainerAssetsRepository, ImageTagMutability: IMMUTABLE). The tag is the asset's content hash,
so the URI start-run puts into each run names one image for good. Building needs Docker or
Finch (CDK_DOCKER=finch); synth does not build. With the `step_image` context key, that image
is used as given (it must be pinned by a tag or a digest; settings check it).

The cluster's nodes pull the image with their own role (EKS node groups carry
AmazonEC2ContainerRegistryReadOnly), so nothing here grants a pull.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import aws_ecr_assets as ecr_assets
from constructs import Construct

IMAGE_DIRECTORY = Path(__file__).resolve().parent.parent / "pipeline" / "image"


class StepImage(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, prebuilt: str) -> None:
        super().__init__(scope, construct_id)
        self.asset: ecr_assets.DockerImageAsset | None = None
        if prebuilt:
            self.uri = prebuilt
            return
        self.asset = ecr_assets.DockerImageAsset(
            self,
            "Asset",
            directory=str(IMAGE_DIRECTORY),
            platform=ecr_assets.Platform.LINUX_AMD64,
        )
        self.uri = self.asset.image_uri
