"""Compiles the pipeline to the IR YAML that the start-run Lambda submits to KFP.

The compiled file is reproducible: the same sources give the same bytes, so the Lambda asset's
hash changes only when the pipeline does (`cdk diff` is clean after a deploy). KFP embeds each
component's packages as a base64 tar.gz whose tar headers carry the files' mtimes and owners
and whose gzip header carries the time of compilation (kfp/dsl/component_factory.py); they are
rewritten with fixed values, their contents unchanged.
"""

from __future__ import annotations

import base64
import gzip
import io
import re
import tarfile
from pathlib import Path

from kfp import compiler

from pipeline.mnist_pipeline import build_pipeline

# How KFP's extraction helper holds the archive (component_factory.
# _generate_shared_extraction_helper): a Python string literal of base64.
_EMBEDDED_ARCHIVE = re.compile(r"(__KFP_EMBEDDED_ARCHIVE_B64 = ')([A-Za-z0-9+/=]+)(')")


def compile_pipeline(output_path: Path) -> Path:
    """Writes the pipeline's IR YAML to `output_path` and returns it."""
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(), str(output_path))
    output_path.write_text(reproducible(output_path.read_text()))
    return output_path


def reproducible(spec_text: str) -> str:
    """The compiled spec with every embedded archive rewritten deterministically."""
    return _EMBEDDED_ARCHIVE.sub(lambda m: m[1] + _reproducible_archive(m[2]) + m[3], spec_text)


def _reproducible_archive(archive_b64: str) -> str:
    raw = gzip.decompress(base64.b64decode(archive_b64))
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(raw)) as source,
        tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as target,
    ):
        for member in sorted(source.getmembers(), key=lambda m: m.name):
            content = source.extractfile(member) if member.isfile() else None
            member.mtime = 0
            member.uid = member.gid = 0
            member.uname = member.gname = ""
            member.mode = 0o755 if member.isdir() or member.mode & 0o111 else 0o644
            target.addfile(member, content)
    return base64.b64encode(gzip.compress(out.getvalue(), mtime=0)).decode("ascii")
