"""start-run's composition refuses, at cold start, an environment it could not work with: the
error names the variable (as the stack sets it) and what is wrong, before any call is made."""

from __future__ import annotations

import pytest

from core import contracts
from core.settings import SettingError
from lambdas.composition import start_run_handler
from tests.fakes.settings import function_environ

SPEC_TEXT = '{"pipelineInfo": {"name": "mnist"}, "root": {}}'


def environ(**values) -> dict[str, str]:
    return function_environ(contracts.START_RUN, kfp_experiment_name="mnist-uploads", **values)


def test_a_relative_spec_path_is_found_in_the_working_directory(tmp_path, monkeypatch):
    # Given the spec file in the working directory (/var/task in Lambda) and a relative path
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "mnist_pipeline.yaml").write_text(SPEC_TEXT)
    monkeypatch.chdir(tmp_path)
    # When the function starts, Then it is built (no AWS or KFP call is made to build it)
    handler = start_run_handler(environ(pipeline_spec_path="specs/mnist_pipeline.yaml"))
    assert callable(handler)


def test_a_missing_spec_file_fails_the_cold_start_naming_the_variable(tmp_path, monkeypatch):
    # Given a relative path that names no file in the working directory
    monkeypatch.chdir(tmp_path)
    # When the function starts, Then it refuses, naming the variable and where it looked
    with pytest.raises(SettingError) as refused:
        start_run_handler(environ(pipeline_spec_path="specs/mnist_pipeline.yaml"))
    message = str(refused.value)
    assert "PIPELINE_SPEC_PATH" in message and "no file at" in message
    assert str((tmp_path / "specs" / "mnist_pipeline.yaml").resolve()) in message
    assert refused.value.key == "pipeline_spec_path"


def test_a_spec_path_naming_a_folder_is_refused(tmp_path, monkeypatch):
    (tmp_path / "mnist_pipeline.yaml").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingError, match=r"PIPELINE_SPEC_PATH: no file at"):
        start_run_handler(environ(pipeline_spec_path="mnist_pipeline.yaml"))


def test_a_missing_experiment_name_fails_the_cold_start_naming_the_variable(tmp_path, monkeypatch):
    # Given an environment that is right but for KFP_EXPERIMENT_NAME, which is absent
    (tmp_path / "mnist_pipeline.yaml").write_text(SPEC_TEXT)
    monkeypatch.chdir(tmp_path)
    env = environ(pipeline_spec_path="mnist_pipeline.yaml")
    start_run_handler(dict(env))  # builds as it is
    del env["KFP_EXPERIMENT_NAME"]
    # When the function starts, Then it refuses: the stack sets every variable, no default
    with pytest.raises(SettingError) as refused:
        start_run_handler(env)
    assert str(refused.value) == "environment variable KFP_EXPERIMENT_NAME: is missing or empty"
    assert refused.value.key == "kfp_experiment_name"
