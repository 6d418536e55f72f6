#!/usr/bin/env python3
"""Entry point of `cdk synth` / `cdk deploy`: the MNIST product's stack, checked by cdk-nag.

Run directly (`.venv/bin/python app.py`) it writes ./cdk.out and exits non-zero when cdk-nag
reports an unsuppressed finding, so CI does not need the CDK CLI to catch one. A bad context
value exits 2 with one line naming the key.
"""

from __future__ import annotations

import os
import sys

from core.settings import SettingError
from stacks.app_factory import NAG_PREFIXES, create_app

EXIT_BAD_CONTEXT = 2


def main() -> int:
    try:
        app, _ = create_app(outdir=None if "CDK_OUTDIR" in os.environ else "cdk.out")
    except SettingError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_CONTEXT
    assembly = app.synth()
    findings = [
        f"[{message.level.value}] {message.id}: {message.entry.data}"
        for stack in assembly.stacks
        for message in stack.messages
        if str(message.entry.data).startswith(NAG_PREFIXES)
    ]
    for finding in findings:
        print(finding, file=sys.stderr)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
