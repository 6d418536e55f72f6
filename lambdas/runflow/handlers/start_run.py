"""S3 ObjectCreated under incoming/ -> one KFP run per dataset version (runflow.logic.start_run)."""

from __future__ import annotations

from typing import Any

from runflow.composition import start_run_service
from runflow.config import get_config
from runflow.observability import logger, metrics

get_config()  # cold start: a missing or malformed variable fails the init phase, naming it


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, list[str]]:
    seconds_left = lambda: context.get_remaining_time_in_millis() / 1000  # noqa: E731
    return start_run_service().handle_notification(event, seconds_left)
