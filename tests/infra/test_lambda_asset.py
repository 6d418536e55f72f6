"""The Lambda asset's dependency cache: pip runs once per requirements content."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stacks import lambda_asset as asset_builder


class RecordingPip:
    """Stands in for `pip install`: records each call and writes a marker package."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, command, **_kwargs):
        self.calls.append(command)
        target = command[command.index("--target") + 1]
        (asset_builder.Path(target) / "installed_dep.py").write_text("")
        return subprocess.CompletedProcess(command, 0, "", "")


@pytest.fixture
def pip(monkeypatch) -> RecordingPip:
    recorder = RecordingPip()
    monkeypatch.setattr(asset_builder.subprocess, "run", recorder)
    return recorder


def test_same_requirements_install_once(tmp_path, pip):
    # Given a requirements file
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("aws-lambda-powertools==3.37.0\n")
    # When the dependencies are asked for twice
    first = asset_builder.installed_dependencies(requirements, tmp_path / "cache")
    second = asset_builder.installed_dependencies(requirements, tmp_path / "cache")
    # Then pip ran once, for the Lambda platform, and both got the same folder
    assert len(pip.calls) == 1
    assert first == second and (first / "installed_dep.py").is_file()
    command = " ".join(pip.calls[0])
    assert "--platform manylinux2014_x86_64" in command
    assert "--python-version 3.12" in command and "--only-binary=:all:" in command


def test_changed_requirements_install_again(tmp_path, pip):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("aws-lambda-powertools==3.37.0\n")
    first = asset_builder.installed_dependencies(requirements, tmp_path / "cache")
    requirements.write_text("aws-lambda-powertools==3.37.0\npydantic==2.13.4\n")
    second = asset_builder.installed_dependencies(requirements, tmp_path / "cache")
    assert len(pip.calls) == 2 and first != second


def test_missing_requirements_install_nothing(tmp_path, pip):
    folder = asset_builder.installed_dependencies(tmp_path / "absent.txt", tmp_path / "cache")
    assert pip.calls == [] and folder.is_dir()


def test_failed_install_leaves_no_cache_entry(tmp_path, monkeypatch):
    # Given pip failing
    def failing_pip(command, **_kwargs):
        return subprocess.CompletedProcess(command, 1, "", "no matching distribution")

    monkeypatch.setattr(asset_builder.subprocess, "run", failing_pip)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("does-not-exist==0.0.0\n")
    # When installing, then the error says why and the cache stays empty
    with pytest.raises(RuntimeError, match="no matching distribution"):
        asset_builder.installed_dependencies(requirements, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_rebuilding_the_real_asset_does_not_run_pip_again(lambda_asset, monkeypatch):
    # Given the session already built the asset (so the dependency cache is warm)
    spec = (lambda_asset / "mnist_pipeline.yaml").read_text()

    def pip_must_not_run(command, **_kwargs):
        raise AssertionError(f"pip ran again: {command}")

    monkeypatch.setattr(asset_builder.subprocess, "run", pip_must_not_run)
    monkeypatch.setattr(asset_builder, "compile_pipeline_spec", lambda path: path.write_text(spec))
    # When the asset is built again
    rebuilt = asset_builder.build_lambda_asset()
    # Then pip did not run and the asset is complete
    assert rebuilt == lambda_asset
    assert (rebuilt / "core" / "contracts.py").is_file()
    assert (rebuilt / "mnist_pipeline.yaml").read_text() == spec


def test_the_asset_ships_the_retire_module_and_the_watchdog_imports_it_from_there(lambda_asset):
    # Given the built asset: the retire module and what it imports, not the rest of the steps
    steps = lambda_asset / "pipeline" / "steps"
    assert sorted(p.name for p in steps.iterdir() if p.suffix == ".py") == [
        "__init__.py",
        "retire.py",
        "sagemaker_jobs.py",
    ]
    # When the watchdog's adapter is imported from the asset first (a fresh interpreter, as in
    # Lambda; -B: no __pycache__ left in the asset the session shares), Then it imports
    probe = "import lambdas.dal.sagemaker_endpoints, pipeline.steps.retire; print('ok')"
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-B",
            "-c",
            f"import sys; sys.path[:0] = [{str(lambda_asset)!r}]; {probe}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.stdout.strip() == "ok", done.stderr
