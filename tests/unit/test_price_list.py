"""The Price List adapter against botocore's Stubber (requests checked against the pricing
model): one call per price, cached in memory; every fault gives "unknown" (None), not an
exception, and is not cached."""

from __future__ import annotations

import json
from pathlib import Path

import botocore.session
import pytest
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError
from botocore.stub import Stubber

from lambdas.dal.price_list import BACKOFF_SECONDS, CLIENT_TIMEOUTS, PRICING_REGION, PriceList
from lambdas.logic import costs

PRICING = Path(__file__).resolve().parents[1] / "pricing"


def _answer(name: str) -> dict:
    return json.loads((PRICING / f"{name}.json").read_text())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def stubbed():
    client = botocore.session.get_session().create_client(
        "pricing",
        region_name=PRICING_REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    with Stubber(client) as stubber:
        clock = Clock()
        yield PriceList(lambda: client, clock), stubber, clock
        stubber.assert_no_pending_responses()


def _expected(component: str = costs.COMPONENT_TRAINING, **extra) -> dict:
    return {
        "ServiceCode": "AmazonSageMaker",
        "Filters": costs.product_filters("eu-west-1", component, "ml.m5.large"),
        "FormatVersion": "aws_v1",
        "MaxResults": 100,
        **extra,
    }


def test_a_price_is_asked_once_and_cached(stubbed):
    prices, stubber, clock = stubbed
    stubber.add_response("get_products", _answer("get_products_training_ml_m5_large"), _expected())
    assert prices("eu-west-1", costs.COMPONENT_TRAINING, "ml.m5.large") == 0.115
    clock.now += 3600
    assert prices("eu-west-1", costs.COMPONENT_TRAINING, "ml.m5.large") == 0.115  # no call


def test_the_cache_expires(stubbed):
    prices, stubber, clock = stubbed
    for _ in range(2):
        stubber.add_response(
            "get_products", _answer("get_products_training_ml_m5_large"), _expected()
        )
    prices("eu-west-1", costs.COMPONENT_TRAINING, "ml.m5.large")
    clock.now += 7 * 3600
    assert prices("eu-west-1", costs.COMPONENT_TRAINING, "ml.m5.large") == 0.115


def test_no_product_is_unknown_and_cached(stubbed):
    prices, stubber, _ = stubbed
    stubber.add_response("get_products", _answer("get_products_empty"), _expected())
    assert prices("eu-west-1", costs.COMPONENT_TRAINING, "ml.m5.large") is None
    assert prices("eu-west-1", costs.COMPONENT_TRAINING, "ml.m5.large") is None  # no call


def test_pages_are_followed_to_the_price(stubbed):
    prices, stubber, _ = stubbed
    first = {**_answer("get_products_empty"), "NextToken": "page-2"}
    stubber.add_response("get_products", first, _expected())
    stubber.add_response(
        "get_products", _answer("get_products_training_ml_m5_large"), _expected(NextToken="page-2")
    )
    assert prices("eu-west-1", costs.COMPONENT_TRAINING, "ml.m5.large") == 0.115


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("ThrottlingException", 400),
        ("AccessDeniedException", 400),  # the role lacks pricing:GetProducts
        ("InternalErrorException", 500),
        ("NotFoundException", 400),
    ],
)
def test_an_api_error_is_unknown_and_asked_again_after_the_backoff(stubbed, code, status):
    prices, stubber, clock = stubbed
    stubber.add_client_error("get_products", code, "injected", status, expected_params=_expected())
    assert prices("eu-west-1", costs.COMPONENT_TRAINING, "ml.m5.large") is None
    # the other lines of the same email do not wait on the API again (no call: none stubbed)
    assert prices("eu-west-1", costs.COMPONENT_HOSTING, "ml.m5.large") is None
    clock.now += BACKOFF_SECONDS
    stubber.add_response("get_products", _answer("get_products_training_ml_m5_large"), _expected())
    assert prices("eu-west-1", costs.COMPONENT_TRAINING, "ml.m5.large") == 0.115


@pytest.mark.parametrize(
    "error",
    [
        EndpointConnectionError(endpoint_url="https://api.pricing.us-east-1.amazonaws.com"),
        ReadTimeoutError(endpoint_url="https://api.pricing.us-east-1.amazonaws.com"),
    ],
)
def test_an_unreachable_api_is_unknown(error):
    class Unreachable:
        def get_products(self, **_):
            raise error

    prices = PriceList(lambda: Unreachable())
    assert prices("eu-west-1", costs.COMPONENT_HOSTING, "ml.m5.large") is None


def test_the_pricing_client_gives_up_well_inside_track_progress_timeout():
    from lambdas.dal.aws_clients import AwsClients
    from stacks.mnist_flow_stack import TRACK_PROGRESS_TIMEOUT_SECONDS

    client = AwsClients("eu-west-1", {}).in_region(PRICING_REGION, **CLIENT_TIMEOUTS)("pricing")
    config = client.meta.config
    assert client.meta.region_name == PRICING_REGION
    worst = config.retries["total_max_attempts"] * (config.connect_timeout + config.read_timeout)
    assert worst < TRACK_PROGRESS_TIMEOUT_SECONDS / 2
