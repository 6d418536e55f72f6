"""The AWS Price List API (`pricing:GetProducts`): SageMaker's on-demand hourly prices.

The Price List Query API answers in a few regions only: botocore's endpoints.json lists
`api.pricing` in us-east-1, eu-central-1 and ap-south-1 (the partition `aws`); prices of every
region are asked there, filtered on the product's `regionCode` attribute (`costs.product_filters`).

Cache: in the function's memory, per (region, component, instance type), for `CACHE_SECONDS`
(the container lives minutes to hours; prices change rarely). An answer with no price is cached
as unknown too, so a run's burst of events asks once. A failed call (throttled, denied,
unavailable, timed out, an unreadable answer) is not cached and gives None: the caller shows
"price unknown", and the run goes on. After a failure the API is not asked again for
`BACKOFF_SECONDS`: one event's email prices up to three lines, and track-progress has 30 s in
all, so a slow API costs one call's timeouts (`CLIENT_TIMEOUTS`), not three.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from lambdas.logic import costs
from lambdas.observability import logger

# The region the product asks: the first of botocore's `api.pricing` endpoints.
PRICING_REGION = "us-east-1"
PRICING_REGIONS = ("us-east-1", "eu-central-1", "ap-south-1")
CACHE_SECONDS = 6 * 3600
BACKOFF_SECONDS = 60
# The pricing client's own limits (lambdas.dal.aws_clients.AwsClients): one retry (botocore's
# retries `max_attempts` counts retries: total_max_attempts is 2), each 2 s to connect and 3 s
# to read, so 10 s at worst, well inside track-progress's 30 s.
CLIENT_TIMEOUTS = {"connect_timeout": 2, "read_timeout": 3, "max_attempts": 1}
MAX_RESULTS = 100  # botocore's pricing model: GetProducts MaxResults 1..100
MAX_PAGES = 3  # one instance type of one component is one SKU; a bound, not a crawl


class PriceList:
    """`prices(region, component, instance_type)` -> USD an hour, or None (unknown)."""

    def __init__(
        self, client: Callable[[], Any], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._client = client
        self._clock = clock
        self._cache: dict[tuple[str, str, str], tuple[float, float | None]] = {}
        self._down_until = 0.0  # after a failure, unknown without asking until then
        self._lock = threading.Lock()

    def __call__(self, region: str, component: str, instance_type: str) -> float | None:
        key = (region, component, instance_type)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and self._clock() - cached[0] < CACHE_SECONDS:
            return cached[1]
        if self._clock() < self._down_until:
            return None
        try:
            price = self._ask(region, component, instance_type)
        except (ClientError, BotoCoreError) as error:
            code = error.response["Error"]["Code"] if isinstance(error, ClientError) else ""
            logger.warning(
                "Price List unavailable: the run's cost shows as unknown",
                extra={"key": list(key), "error": code or type(error).__name__},
            )
            self._down_until = self._clock() + BACKOFF_SECONDS
            return None
        with self._lock:
            self._cache[key] = (self._clock(), price)
        if price is None:
            logger.info("No Price List price for this instance", extra={"key": list(key)})
        return price

    def _ask(self, region: str, component: str, instance_type: str) -> float | None:
        request: dict[str, Any] = {
            "ServiceCode": costs.SERVICE_CODE,
            "Filters": costs.product_filters(region, component, instance_type),
            "FormatVersion": "aws_v1",
            "MaxResults": MAX_RESULTS,
        }
        for _ in range(MAX_PAGES):
            answer = self._client().get_products(**request)
            price = costs.parse_hourly_usd(answer.get("PriceList") or [], component, instance_type)
            if price is not None or not answer.get("NextToken"):
                return price
            request["NextToken"] = answer["NextToken"]
        return None
