"""The compiled pipeline (the IR YAML start-run submits): steps, order, parameters, runtime."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.settings import pipeline_parameters
from pipeline.compile import compile_pipeline

REPO_ROOT = Path(__file__).resolve().parents[2]
STEP_ORDER = ["preprocess", "train", "create-model", "batch-transform", "deploy"]


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = compile_pipeline(tmp_path_factory.mktemp("spec") / "mnist_pipeline.yaml")
    return yaml.safe_load(path.read_text())


def _tasks(spec):
    """The steps, which run inside the exit handler's group."""
    group = spec["root"]["dag"]["tasks"]["exit-handler-1"]["componentRef"]["name"]
    return spec["components"][group]["dag"]["tasks"]


def test_the_five_steps_run_in_the_workshops_order(spec):
    tasks = _tasks(spec)
    assert sorted(tasks) == sorted(STEP_ORDER)
    depends = {name: set(task.get("dependentTasks", [])) for name, task in tasks.items()}
    assert depends == {
        "preprocess": set(),
        "train": {"preprocess"},
        "create-model": {"train"},
        "batch-transform": {"create-model", "preprocess"},
        "deploy": {"create-model", "batch-transform"},
    }


def test_an_exit_handler_reports_the_final_state_whatever_happened(spec):
    root = spec["root"]["dag"]["tasks"]
    assert sorted(root) == ["exit-handler-1", "report-final-state"]
    reporter = root["report-final-state"]
    assert reporter["dependentTasks"] == ["exit-handler-1"]
    assert reporter["triggerPolicy"] == {"strategy": "ALL_UPSTREAM_TASKS_COMPLETED"}
    assert reporter["inputs"]["parameters"]["status"] == {
        "taskFinalStatus": {"producerTask": "exit-handler-1"}
    }


def test_the_compiled_parameters_are_the_schemas_with_their_defaults_and_docs(spec):
    # Given the compiled pipeline's parameters
    params = spec["root"]["inputDefinitions"]["parameters"]
    declared = {p.key: p for p in pipeline_parameters()}
    # Then the per-run and stack-supplied ones are required, the settings carry their defaults
    assert set(params) == set(declared)
    required = {name for name, p in params.items() if not p.get("isOptional")}
    assert required == {
        "dataset_uri",
        "dataset_version",
        "run_key",
        "region",
        "sagemaker_role_arn",
        "event_bus_name",
    }
    for name, param in params.items():
        assert param["description"] == declared[name].doc
        if param.get("isOptional"):
            assert param["defaultValue"] == declared[name].default


def test_no_step_is_cached_and_sagemaker_steps_retry(spec):
    tasks = _tasks(spec)
    everything = [*tasks.values(), spec["root"]["dag"]["tasks"]["report-final-state"]]
    assert all(task["cachingOptions"] == {} for task in everything)
    retried = {name for name, task in tasks.items() if task.get("retryPolicy")}
    assert retried == {"train", "create-model", "batch-transform", "deploy"}


def test_every_step_pins_its_packages(spec):
    for name, executor in spec["deploymentSpec"]["executors"].items():
        install = executor["container"]["command"][2]
        assert "'boto3==1.43.11'" in install and "'numpy==2.4.6'" in install, name


def test_a_steps_program_carries_the_steps_library_and_the_contracts(spec, tmp_path):
    # Given the program KFP runs for the preprocess step, alone in an empty folder
    program = spec["deploymentSpec"]["executors"]["exec-preprocess"]["container"]["command"][-1]
    (tmp_path / "step.py").write_text(program)
    probe = (
        "import runpy; step = runpy.run_path('step.py');"
        "import pipeline.steps.steps, core.contracts;"
        "print(pipeline.steps.steps.__file__); print(core.contracts.__file__)"
    )
    # When it is loaded the way the executor loads it
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True
    )
    # Then both modules come from the archive embedded in the program, not from this repo
    assert done.returncode == 0, done.stderr
    paths = [Path(line) for line in done.stdout.split()]
    assert [path.name for path in paths] == ["steps.py", "contracts.py"]
    assert not any(REPO_ROOT in path.parents for path in paths), paths
