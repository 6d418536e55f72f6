"""Builds the track-progress service from its configuration: the one place its adapters meet logic.

Apart from runflow.composition (start-run's wiring) so that this function's cold start does not
import the EKS token, KFP HTTP, Secrets Manager and pipeline-spec code it never uses. Built on
first use and cached per container; reset for tests.
"""

from __future__ import annotations

from functools import lru_cache, partial

from runflow.config import get_track_progress_config
from runflow.dal.aws_clients import aws_client
from runflow.dal.runs_table import DynamoRunProgress
from runflow.dal.topic import SnsNotifier
from runflow.logic.track_progress import TrackProgress
from runflow.observability import configure_observability


@lru_cache(maxsize=1)
def track_progress_service() -> TrackProgress:
    config = get_track_progress_config()
    configure_observability(config.service_name, config.metrics_namespace)
    return TrackProgress(
        runs=DynamoRunProgress(
            config.runs_table_name, partial(aws_client, "dynamodb", config.region)
        ),
        notifier=SnsNotifier(
            config.notification_topic_arn, partial(aws_client, "sns", config.region)
        ),
        kfp_ui_url=config.kfp_ui_url,
    )


def reset_track_progress_service() -> None:
    """For tests: forget the service."""
    track_progress_service.cache_clear()
