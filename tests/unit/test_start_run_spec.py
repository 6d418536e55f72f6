"""Reading the packaged pipeline spec into the run's `pipeline_spec` field, with the steps'
image the stack deployed."""

from __future__ import annotations

import json

import pytest

from core.contracts import STEP_IMAGE_PLACEHOLDER
from lambdas.dal.pipeline_spec import PipelineSpecFile, parse_pipeline_spec, with_step_image
from lambdas.logic.ports import KfpCallFailed
from pipeline.compile import compile_pipeline

STEP_IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/cdk-hnb659fds-container-assets:3f2a"
PIPELINE = f"""\
deploymentSpec:
  executors:
    exec-train:
      container: {{image: '{STEP_IMAGE_PLACEHOLDER}', command: [sh]}}
    exec-deploy:
      container: {{image: '{STEP_IMAGE_PLACEHOLDER}', command: [sh]}}
pipelineInfo:
  name: mnist
root:
  inputDefinitions:
    parameters:
      run_key: {{parameterType: STRING}}
schemaVersion: 2.1.0
"""
PLATFORM = """\
platforms:
  kubernetes:
    deploymentSpec:
      executors:
        exec-train: {secretAsEnv: []}
"""


def test_single_document_is_the_pipeline_spec():
    spec = parse_pipeline_spec(PIPELINE)
    assert spec["pipelineInfo"]["name"] == "mnist"


def test_platform_spec_document_is_sent_alongside():
    # Given IR YAML with a pipeline spec and a platform spec document
    spec = parse_pipeline_spec(PIPELINE + "---\n" + PLATFORM)

    # Then the run gets both, in the shape KFP's API expects
    assert set(spec) == {"pipeline_spec", "platform_spec"}
    assert spec["pipeline_spec"]["pipelineInfo"]["name"] == "mnist"
    assert "kubernetes" in spec["platform_spec"]["platforms"]


def test_json_copy_is_read_without_yaml():
    import yaml

    as_json = json.dumps(yaml.safe_load(PIPELINE))
    assert parse_pipeline_spec(as_json) == yaml.safe_load(PIPELINE)


@pytest.mark.parametrize("text", ["", "just: a map\n", "[1, 2]\n", "pipelineInfo: {name: x\n"])
def test_unusable_spec_fails_the_start_clearly(tmp_path, text):
    # Given a packaged file that is not a pipeline spec
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)

    # When the run start needs it, Then it fails permanently, naming the file
    with pytest.raises(KfpCallFailed) as raised:
        PipelineSpecFile(path, STEP_IMAGE)()
    assert raised.value.kind == KfpCallFailed.PERMANENT and str(path) in str(raised.value)


def test_spec_is_read_once_per_container(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text(PIPELINE)
    spec_file = PipelineSpecFile(path, STEP_IMAGE)
    first = spec_file()
    path.write_text("garbage")
    assert spec_file() is first


def _images(spec):
    executors = spec.get("pipeline_spec", spec)["deploymentSpec"]["executors"]
    return {name: e["container"]["image"] for name, e in executors.items()}


def test_every_step_runs_the_deployed_image(tmp_path):
    # Given the spec as the pipeline compiles it (the image is known only at deploy)
    path = compile_pipeline(tmp_path / "pipeline.yaml")
    assert set(_images(parse_pipeline_spec(path.read_text())).values()) == {STEP_IMAGE_PLACEHOLDER}

    # When start-run reads it, Then every step names the deployed image, pinned as deployed
    images = _images(PipelineSpecFile(path, STEP_IMAGE)())
    assert len(images) == 8 and set(images.values()) == {STEP_IMAGE}  # 7 steps + exit handler


def test_the_image_goes_into_the_spec_beside_a_platform_spec():
    spec = with_step_image(parse_pipeline_spec(PIPELINE + "---\n" + PLATFORM), STEP_IMAGE)
    assert set(_images(spec).values()) == {STEP_IMAGE} and "platform_spec" in spec


def test_a_spec_without_the_placeholder_is_refused(tmp_path):
    # Given a spec compiled some other way (its steps name their own images)
    path = tmp_path / "pipeline.yaml"
    path.write_text(PIPELINE.replace(STEP_IMAGE_PLACEHOLDER, "python:3.11-slim"))

    # Then the run does not start on images nobody deployed: a permanent failure that says why
    with pytest.raises(KfpCallFailed) as raised:
        PipelineSpecFile(path, STEP_IMAGE)()
    assert raised.value.kind == KfpCallFailed.PERMANENT
    assert STEP_IMAGE_PLACEHOLDER in str(raised.value)
