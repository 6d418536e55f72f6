"""SageMaker's endpoints, for the watchdog: the product's per-run endpoints past their time to
live, retired through the one module that knows the product's SageMaker resources
(pipeline/steps/retire.py, shipped in the Lambda asset with the module it reads errors with)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from lambdas.logic.ports import ExpiredEndpoints, RetiredResource, SageMakerCallFailed
from pipeline.steps import retire


class SageMakerEndpoints(ExpiredEndpoints):
    def __init__(self, sagemaker: Callable[[], Any], s3: Callable[[], Any], bucket: str) -> None:
        self._sagemaker = sagemaker
        self._s3 = s3
        self._bucket = bucket

    def retire_expired(self, ttl_seconds: float, now: float) -> list[RetiredResource]:
        sm, s3 = self._sagemaker(), self._s3()
        try:
            inv = retire.read_inventory(sm, s3, self._bucket)
            decisions = retire.plan_expired(
                inv, ttl_seconds=ttl_seconds, now=datetime.fromtimestamp(now, UTC)
            )
            outcomes = retire.carry_out(sm, decisions, s3=s3, bucket=self._bucket)
        except (BotoCoreError, ClientError) as error:
            raise SageMakerCallFailed(f"{type(error).__name__}: {error}") from error
        return [
            RetiredResource(
                o.decision.resource.kind,
                o.decision.resource.name,
                o.decision.resource.run_key,
                o.result,
                o.detail or o.decision.reason,
            )
            for o in outcomes
        ]
