"""The steps' image: built from pipeline/image at deploy, pinned, and named in every run."""

from __future__ import annotations

import time

from aws_cdk import FileSystem

from pipeline.components import embedded_runtime_dir
from stacks.lambda_asset import build_lambda_asset
from stacks.step_image import IMAGE_DIRECTORY
from tests.infra.variants import PREBUILT_STEP_IMAGE


def _step_image_variable(synth):
    function = synth.resources[synth.logical_id(synth.stack.start_run.function)]
    return function["Properties"]["Environment"]["Variables"]["STEP_IMAGE"]


def test_the_step_image_is_built_for_amd64_from_the_repositorys_dockerfile(default_synth):
    # Given the assets cdk deploy publishes
    (image,) = default_synth.assets["dockerImages"].values()
    # Then the step image is built from pipeline/image for linux/amd64
    assert image["source"]["platform"] == "linux/amd64"
    assert (IMAGE_DIRECTORY / "Dockerfile").is_file()
    assert (
        image["source"]["directory"] == f"asset.{default_synth.stack.step_image.asset.asset_hash}"
    )
    (destination,) = image["destinations"].values()
    # And start-run names it by the tag cdk deploy pushes, the asset's content hash, in the
    # bootstrap's container repository (its tags are immutable)
    uri = _step_image_variable(default_synth)["Fn::Sub"]
    assert uri.endswith(f"/{destination['repositoryName']}:{destination['imageTag']}")
    assert destination["imageTag"] == default_synth.stack.step_image.asset.asset_hash


def test_a_prebuilt_step_image_is_used_as_given_and_nothing_is_built(custom_image_synth):
    assert custom_image_synth.assets.get("dockerImages", {}) == {}
    assert _step_image_variable(custom_image_synth) == PREBUILT_STEP_IMAGE
    assert custom_image_synth.stack.step_image.asset is None


def test_two_builds_of_the_lambda_asset_have_the_same_hash(lambda_asset, monkeypatch):
    # Given the asset's fingerprint (what names the asset and the functions' S3 key)
    first = FileSystem.fingerprint(str(lambda_asset))
    # When it is built again, later, from freshly staged sources
    embedded_runtime_dir.cache_clear()
    later = time.time() + 86400
    monkeypatch.setattr(time, "time", lambda: later)
    second = FileSystem.fingerprint(str(build_lambda_asset()))
    # Then the hash is the same: `cdk diff` is clean and a deploy leaves the functions alone
    assert first == second
