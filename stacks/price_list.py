"""The AWS Price List grant (track-progress prices each run; `mnistflow status` too).

The Service Authorization Reference, "Actions, resources, and condition keys for AWS Price
List": GetProducts has no resource type, so "To allow access to AWS Price List, specify
"Resource": "*" in your policy" (it reads public prices, nothing of the account's).
"""

from __future__ import annotations

from cdk_nag import NagPackSuppression

PRICE_LIST_SID = "ReadPriceList"
PRICE_LIST_ACTIONS = ("pricing:GetProducts",)
PRICE_LIST_SUPPRESSION = NagPackSuppression(
    id="AwsSolutions-IAM5",
    reason=(
        "pricing:GetProducts has no resource-level permissions (Service Authorization"
        " Reference, AWS Price List): it can only be granted on '*', and reads public prices."
    ),
    applies_to=["Resource::*"],
)
