"""Builds the one Lambda asset folder every function ships, without Docker.

The folder holds the `lambdas` and `core` packages as they are in the repository, their runtime
dependencies installed for the Lambda platform (cached by a hash of `lambdas/requirements.txt`,
so repeated synths never re-run pip) and the compiled pipeline spec the start-run Lambda
submits.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from core.contracts import PIPELINE_SPEC_FILE

REPO_ROOT = Path(__file__).resolve().parent.parent
LAMBDA_PYTHON_VERSION = "3.12"
LAMBDA_PLATFORM = "manylinux2014_x86_64"
# The packages the functions import, copied as they are (one import root: the asset's root).
PACKAGES = ("core", "lambdas")
# Single modules of other packages the functions import (the watchdog retires endpoints through
# the pipeline's retire module), copied with their packages' __init__.
MODULES = (
    "pipeline/__init__.py",
    "pipeline/steps/__init__.py",
    "pipeline/steps/retire.py",
    "pipeline/steps/sagemaker_jobs.py",
)
_IGNORED = shutil.ignore_patterns(
    "__pycache__", "*.pyc", "*.pyo", ".pytest_cache", "requirements.txt"
)
_COMPLETE_MARKER = ".complete"


def build_lambda_asset(repo_root: Path = REPO_ROOT, build_dir: Path | None = None) -> Path:
    """Assemble `build/lambda-asset/` and return its path."""
    build_dir = build_dir or repo_root / "build"
    requirements = repo_root / "lambdas" / "requirements.txt"
    dependencies = installed_dependencies(requirements, build_dir / "lambda-deps")

    asset = build_dir / "lambda-asset"
    if asset.exists():
        shutil.rmtree(asset)
    shutil.copytree(dependencies, asset, ignore=shutil.ignore_patterns(_COMPLETE_MARKER))
    for package in PACKAGES:
        shutil.copytree(repo_root / package, asset / package, ignore=_IGNORED)
    for module in MODULES:
        (asset / module).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(repo_root / module, asset / module)
    compile_pipeline_spec(asset / PIPELINE_SPEC_FILE)
    return asset


def installed_dependencies(requirements: Path, cache_root: Path) -> Path:
    """The folder holding the Lambda's dependencies, installed once per requirements content.

    A missing requirements file counts as empty (nothing to install).
    """
    content = requirements.read_bytes() if requirements.exists() else b""
    target = cache_root / requirements_fingerprint(content)
    if (target / _COMPLETE_MARKER).exists():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    # Install into a scratch folder and rename it, so an interrupted pip never leaves a
    # half-filled folder that a later synth would take for a complete cache entry.
    scratch = Path(tempfile.mkdtemp(prefix="installing-", dir=cache_root))
    try:
        if content.strip():
            _pip_install(requirements, scratch)
        (scratch / _COMPLETE_MARKER).write_text(requirements_fingerprint(content))
        if target.exists():
            shutil.rmtree(target)
        scratch.rename(target)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch)
    return target


def requirements_fingerprint(content: bytes) -> str:
    """Cache key: the requirements' content plus the platform they are installed for."""
    platform = f"{LAMBDA_PLATFORM}|cp|{LAMBDA_PYTHON_VERSION}\n".encode()
    return hashlib.sha256(platform + content).hexdigest()[:16]


def _pip_install(requirements: Path, target: Path) -> None:
    command = [
        sys.executable, "-m", "pip", "install",
        "--requirement", str(requirements),
        "--target", str(target),
        "--platform", LAMBDA_PLATFORM,
        "--implementation", "cp",
        "--python-version", LAMBDA_PYTHON_VERSION,
        "--only-binary=:all:",
        "--no-compile",
        "--disable-pip-version-check",
        "--quiet",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"pip could not install {requirements} for the Lambda platform:\n{result.stderr}"
        )


def compile_pipeline_spec(output_path: Path) -> Path:
    """Write the compiled KFP pipeline (IR YAML) the start-run Lambda submits."""
    # Imported here: the KFP SDK is slow to import and only the asset build needs it.
    from pipeline import compile as pipeline_compile

    return pipeline_compile.compile_pipeline(output_path)
