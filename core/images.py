"""Where SageMaker's built-in k-means image lives in each region.

`kmeans_images.json` is a verbatim copy of the SageMaker Python SDK's
src/sagemaker/image_uri_config/kmeans.json (aws/sagemaker-python-sdk, tag v2.257.6, commit
fc582aaa46faf7b7e16ab1e13840869712174cd0; the file last changed on 2024-09-10 in commit
9d4ef0ec11db, and SDK v3 carries it unchanged as sagemaker-core/.../kmeans.json). The AWS docs'
registry page for ap-northeast-3 agrees (867004704886). Refresh it by copying the file again.

The ECR host follows the region's partition: the SDK asks botocore's endpoint resolver; the
domains below are its ALTERNATE_DOMAINS (src/sagemaker/utils.py at the same tag), for the
regions the table holds.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

TABLE = Path(__file__).with_name("kmeans_images.json")
ALGORITHM_VERSION = "1"
DEFAULT_ECR_DOMAIN = "amazonaws.com"
ECR_DOMAINS = {
    "cn-north-1": "amazonaws.com.cn",
    "cn-northwest-1": "amazonaws.com.cn",
    "us-iso-east-1": "c2s.ic.gov",
    "us-isob-east-1": "sc2s.sgov.gov",
    "us-isof-south-1": "csp.hci.ic.gov",
    "us-isof-east-1": "csp.hci.ic.gov",
}
# <account>.dkr.ecr.<region>.<domain>/<repository>[:tag | @sha256:digest]
ECR_IMAGE = re.compile(
    r"(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.(?P<domain>[a-z0-9.-]+)"
    r"/(?P<repository>[a-z0-9][a-z0-9._/-]*)(?::[\w][\w.-]{0,127}|@sha256:[0-9a-f]{64})?"
)


@cache
def _version() -> dict:
    return json.loads(TABLE.read_text())["versions"][ALGORITHM_VERSION]


def kmeans_registries() -> dict[str, str]:
    """{region: the account of its k-means registry}."""
    return dict(_version()["registries"])


def kmeans_repository() -> str:
    return _version()["repository"]


def kmeans_image(region: str, override: str = "") -> str:
    """The k-means training and inference image for `region`, unless `override` names one."""
    if override:
        return override
    try:
        account = kmeans_registries()[region]
    except KeyError:
        raise ValueError(
            f"no built-in k-means image is known for region {region!r}; "
            "set the training_image context key"
        ) from None
    domain = ECR_DOMAINS.get(region, DEFAULT_ECR_DOMAIN)
    return f"{account}.dkr.ecr.{region}.{domain}/{kmeans_repository()}:{ALGORITHM_VERSION}"
