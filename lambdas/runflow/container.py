"""What a Lambda container caches between invocations, forgotten in one call.

Lambda never calls this: a new container starts empty. Hosts that run the handlers in a
long-lived process (the local stack, the tests) call it to start the next "container" fresh,
with the configuration now in the environment.
"""

from __future__ import annotations

from runflow import composition, track_progress_composition
from runflow.config import reset_config, reset_track_progress_config
from runflow.dal.aws_clients import reset_aws_clients


def start_new_container() -> None:
    reset_config()
    reset_track_progress_config()
    reset_aws_clients()
    composition.reset_start_run_service()
    track_progress_composition.reset_track_progress_service()
