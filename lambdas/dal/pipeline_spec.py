"""The compiled pipeline shipped in the package, read and parsed once per container.

KFP's IR YAML holds the pipeline spec, optionally followed by a platform spec document;
a JSON copy (one object) is read without PyYAML, which is then never imported. The steps'
image is known only at deploy: the compiled spec names core.contracts.STEP_IMAGE_PLACEHOLDER,
which is replaced here by the deployed one.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from core.contracts import STEP_IMAGE_PLACEHOLDER
from lambdas.logic.ports import KfpCallFailed


class PipelineSpecError(ValueError):
    pass


def parse_pipeline_spec(text: str, source: str = "pipeline spec") -> dict[str, Any]:
    """The value of a run's `pipeline_spec` field, as KFP's API and SDK shape it:
    the pipeline spec itself, or {"pipeline_spec": ..., "platform_spec": ...} when the
    file carries a non-empty platform spec."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        documents = [json.loads(stripped)]
    else:
        import yaml  # only for YAML files; ~20 ms, paid at the first run start, not at init

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        try:
            documents = [doc for doc in yaml.load_all(text, Loader=loader) if doc is not None]
        except yaml.YAMLError as error:
            raise PipelineSpecError(f"{source}: not valid YAML: {error}") from error
    if not documents or not isinstance(documents[0], dict):
        raise PipelineSpecError(f"{source}: no pipeline spec document")
    first = documents[0]
    if "pipeline_spec" in first and "pipelineInfo" not in first:
        return first  # already in the {"pipeline_spec", "platform_spec"} shape
    if "pipelineInfo" not in first or "root" not in first:
        raise PipelineSpecError(f"{source}: first document is not a KFP pipeline spec")
    platform: dict[str, Any] = {}
    for document in documents[1:]:
        if isinstance(document, dict):
            platform.update(document)
    if not platform:
        return first
    return {"pipeline_spec": first, "platform_spec": platform}


def with_step_image(spec: dict[str, Any], image: str) -> dict[str, Any]:
    """`spec` (either shape parse_pipeline_spec returns) with every executor that names the
    placeholder image running `image` instead (the IR's deploymentSpec.executors.<name>.
    container.image, kubeflow/pipelines api/v2alpha1/pipeline_spec.proto)."""
    pipeline = spec if "pipelineInfo" in spec else spec["pipeline_spec"]
    executors = pipeline.get("deploymentSpec", {}).get("executors", {})
    replaced = 0
    for executor in executors.values():
        container = executor.get("container") or {}
        if container.get("image") == STEP_IMAGE_PLACEHOLDER:
            container["image"] = image
            replaced += 1
    if not replaced:
        raise PipelineSpecError(f"no step names the image {STEP_IMAGE_PLACEHOLDER!r}")
    return spec


class PipelineSpecFile:
    def __init__(self, path: Path, step_image: str):
        self._path = path
        self._step_image = step_image
        self._spec: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def __call__(self) -> dict[str, Any]:
        with self._lock:
            if self._spec is None:
                try:
                    text = self._path.read_text(encoding="utf-8")
                    spec = parse_pipeline_spec(text, str(self._path))
                    self._spec = with_step_image(spec, self._step_image)
                except (OSError, ValueError) as error:
                    raise KfpCallFailed(
                        KfpCallFailed.PERMANENT, f"the packaged pipeline spec is unusable: {error}"
                    ) from error
            return self._spec
