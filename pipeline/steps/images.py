"""Where SageMaker's built-in k-means image lives in each region (the seed kept this table).

Accounts of the `kmeans:1` repositories, as the SageMaker Python SDK v2 lists them.
"""

from __future__ import annotations

KMEANS_REPOSITORY = "kmeans:1"
KMEANS_REGISTRIES = {
    "af-south-1": "455444449433",
    "ap-east-1": "286214385809",
    "ap-northeast-1": "351501993468",
    "ap-northeast-2": "835164637446",
    "ap-northeast-3": "364406365360",
    "ap-south-1": "991648021394",
    "ap-southeast-1": "475088953585",
    "ap-southeast-2": "712309505854",
    "ca-central-1": "469771592824",
    "cn-north-1": "390948362332",
    "cn-northwest-1": "387376663083",
    "eu-central-1": "664544806723",
    "eu-north-1": "669576153137",
    "eu-south-1": "257386234256",
    "eu-west-1": "438346466558",
    "eu-west-2": "644912444149",
    "eu-west-3": "749696950732",
    "me-south-1": "249704162688",
    "sa-east-1": "855470959533",
    "us-east-1": "382416733822",
    "us-east-2": "404615174143",
    "us-gov-west-1": "226302683700",
    "us-west-1": "632365934929",
    "us-west-2": "174872318107",
}


def kmeans_image(region: str, override: str = "") -> str:
    """The k-means training/inference image for `region`, unless `override` names one."""
    if override:
        return override
    try:
        account = KMEANS_REGISTRIES[region]
    except KeyError:
        raise ValueError(
            f"no built-in k-means image is known for region {region!r}; "
            "pass the training_image parameter"
        ) from None
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{account}.dkr.ecr.{region}.{domain}/{KMEANS_REPOSITORY}"
