"""Reading the packaged pipeline spec into the run's `pipeline_spec` field."""

from __future__ import annotations

import json

import pytest

from lambdas.dal.pipeline_spec import PipelineSpecFile, parse_pipeline_spec
from lambdas.logic.ports import KfpCallFailed

PIPELINE = """\
pipelineInfo:
  name: mnist
root:
  inputDefinitions:
    parameters:
      run_key: {parameterType: STRING}
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
        PipelineSpecFile(path)()
    assert raised.value.kind == KfpCallFailed.PERMANENT and str(path) in str(raised.value)


def test_spec_is_read_once_per_container(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text(PIPELINE)
    spec_file = PipelineSpecFile(path)
    first = spec_file()
    path.write_text("garbage")
    assert spec_file() is first
