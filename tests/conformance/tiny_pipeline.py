"""A pipeline of three small steps for the run lifecycle: `add` then `check` (which fails when
the sum is over `fail_over`), and `hold` (which runs for `hold_seconds`, a run to terminate).

The steps install nothing (install_kfp_package=False), so kfp.local runs them offline, in this
Python, as it runs the product's."""

# No `from __future__ import annotations`: kfp reads the components' annotations as types.
from pathlib import Path

from kfp import compiler, dsl

IMAGE = "python:3.11-slim"  # kfp.local's subprocess runner does not use it


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def add(a: int, b: int) -> int:
    return a + b


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def check(total: int, fail_over: int) -> None:
    if total > fail_over:
        raise ValueError(f"total {total} is over {fail_over}")


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def hold(seconds: int) -> None:
    import time

    time.sleep(seconds)


@dsl.pipeline(name="tiny")
def tiny(a: int, b: int = 2, fail_over: int = 100, hold_seconds: int = 0) -> None:
    total = add(a=a, b=b)
    check(total=total.output, fail_over=fail_over).after(hold(seconds=hold_seconds))


def compile_tiny(path: Path) -> Path:
    compiler.Compiler().compile(tiny, str(path))
    return path
