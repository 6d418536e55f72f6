"""The compiled pipeline (the IR YAML start-run submits): steps, order, parameters, runtime."""

import base64
import gzip
import io
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from core.contracts import STEP_IMAGE_PLACEHOLDER
from core.settings import pipeline_parameters
from pipeline.compile import compile_pipeline, reproducible
from pipeline.components import embedded_runtime_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
STEP_ORDER = [
    "preprocess",
    "train",
    "create-model",
    "batch-transform",
    "evaluate",
    "deploy",
    "retire-superseded",
]


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = compile_pipeline(tmp_path_factory.mktemp("spec") / "mnist_pipeline.yaml")
    return yaml.safe_load(path.read_text())


def _tasks(spec):
    """The steps, which run inside the exit handler's group."""
    group = spec["root"]["dag"]["tasks"]["exit-handler-1"]["componentRef"]["name"]
    return spec["components"][group]["dag"]["tasks"]


def test_the_steps_run_in_the_workshops_order_with_the_gate_before_deploy(spec):
    tasks = _tasks(spec)
    assert sorted(tasks) == sorted(STEP_ORDER)
    depends = {name: set(task.get("dependentTasks", [])) for name, task in tasks.items()}
    assert depends == {
        "preprocess": set(),
        "train": {"preprocess"},
        "create-model": {"train"},
        "batch-transform": {"create-model", "preprocess"},
        "evaluate": {"preprocess", "train", "batch-transform"},
        # the quality gate: nothing deploys before it; preprocess: the run files the re-check of
        # the serving model reads just before the update
        "deploy": {"create-model", "evaluate", "preprocess"},
        "retire-superseded": {"deploy"},  # only after the endpoint serves the new config
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
        "endpoint_alarm_names",
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


def test_no_step_installs_anything_when_it_starts(spec):
    # The steps' image has their packages baked in (pipeline/image): a step needs no internet.
    for name, executor in spec["deploymentSpec"]["executors"].items():
        container = executor["container"]
        assert container["image"] == STEP_IMAGE_PLACEHOLDER, name
        program = " ".join(container["command"])
        assert "pip" not in program.split() and "pip install" not in program, name


def _pins(text):
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.MULTILINE))


def test_the_step_image_has_the_versions_the_tests_ran_with():
    # Given the image's hashed lock and the project's lock
    image = _pins((REPO_ROOT / "pipeline" / "image" / "requirements.txt").read_text())
    project = _pins((REPO_ROOT / "requirements.lock").read_text())
    # Then what the steps import is there, each at the version the tests ran with
    assert {"kfp", "boto3", "numpy"} <= set(image)
    assert {name: project.get(name) for name in image} == image


def test_the_compiled_spec_is_the_same_bytes_every_time(tmp_path, monkeypatch):
    # Given a first compilation
    first = compile_pipeline(tmp_path / "first.yaml").read_bytes()
    # When it is compiled again, a day later, from freshly staged copies of the packages
    embedded_runtime_dir.cache_clear()
    later = time.time() + 86400
    monkeypatch.setattr(time, "time", lambda: later)
    second = compile_pipeline(tmp_path / "second.yaml").read_bytes()
    # Then the bytes are the same: the Lambda asset's hash moves only when the pipeline does
    assert first == second


def test_an_embedded_archive_loses_its_timestamps_and_owners_not_its_contents():
    # Given an archive as KFP embeds it, with a file's mtime, owner and the gzip header's time
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        member = tarfile.TarInfo("./core/contracts.py")
        member.size, member.mtime, member.uid, member.uname = 5, 1_700_000_000, 1000, "dev"
        tar.addfile(member, io.BytesIO(b"x = 1"))
    archive = base64.b64encode(gzip.compress(raw.getvalue(), mtime=1_700_000_000)).decode()
    # When the compiled text is made reproducible
    text = reproducible(f"__KFP_EMBEDDED_ARCHIVE_B64 = '{archive}'\n")
    # Then the archive reads back with the same file, and nothing that varies
    fixed = re.search(r"'(.+)'", text)[1]
    packed = base64.b64decode(fixed)
    assert packed[4:8] == b"\0\0\0\0"  # the gzip header's MTIME field (RFC 1952)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(packed))) as tar:
        (member,) = tar.getmembers()
        assert (member.name, member.mtime, member.uid, member.uname) == (
            "./core/contracts.py",
            0,
            0,
            "",
        )
        assert tar.extractfile(member).read() == b"x = 1"


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
