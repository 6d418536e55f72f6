#!/usr/bin/env python3
"""Entry point of `cdk synth` / `cdk deploy`: the MNIST product's stack, checked by cdk-nag.

Run directly (`python app.py`) it writes ./cdk.out and exits non-zero when cdk-nag reports an
unsuppressed finding, so CI does not need the CDK CLI to catch one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The stacks import the shared contracts from the Lambda package (as pytest's pythonpath does).
sys.path.insert(0, str(Path(__file__).resolve().parent / "lambdas"))

from stacks.app_factory import create_app  # noqa: E402

NAG_PREFIX = "AwsSolutions-"


def main() -> int:
    app, _ = create_app(outdir=None if "CDK_OUTDIR" in os.environ else "cdk.out")
    assembly = app.synth()
    findings = [
        f"[{message.level.value}] {message.id}: {message.entry.data}"
        for stack in assembly.stacks
        for message in stack.messages
        if str(message.entry.data).startswith(NAG_PREFIX)
    ]
    for finding in findings:
        print(finding, file=sys.stderr)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
