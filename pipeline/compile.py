"""Compiles the pipeline to the IR YAML that the start-run Lambda submits to KFP."""

from __future__ import annotations

from pathlib import Path

from kfp import compiler

from pipeline.mnist_pipeline import build_pipeline


def compile_pipeline(output_path: Path) -> Path:
    """Writes the pipeline's IR YAML to `output_path` and returns it."""
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(), str(output_path))
    return output_path
