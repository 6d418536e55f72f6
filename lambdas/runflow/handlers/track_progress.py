"""SageMaker state changes and the pipeline's final state -> the run record, and one email per run
when the endpoint is in service or the run failed (runflow.logic.track_progress)."""

from __future__ import annotations

from typing import Any

from runflow.config import get_track_progress_config
from runflow.observability import logger, metrics
from runflow.track_progress_composition import track_progress_service

get_track_progress_config()  # cold start: a missing or malformed variable fails init, naming it


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, str]:
    return track_progress_service().handle(event)
