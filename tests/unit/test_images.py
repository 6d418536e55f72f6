"""The built-in k-means image for every region SageMaker's own SDK knows.

EXPECTED is what `sagemaker.image_uris.retrieve("kmeans", region)` returns (aws/sagemaker-python-sdk
tag v2.257.6, image_uri_config/kmeans.json, with the ECR host from botocore's endpoint resolver),
written down here independently of the product's table, as this was read on 2026-11-29. The
regions the product got wrong or lacked before: ap-northeast-3 (the account was 364406365360),
ap-south-2, ap-southeast-3, ap-southeast-4, ca-west-1, eu-central-2, eu-south-2, il-central-1,
me-central-1, us-gov-east-1.
"""

from __future__ import annotations

import pytest

from core import images

EXPECTED = {
    "af-south-1": "455444449433.dkr.ecr.af-south-1.amazonaws.com/kmeans:1",
    "ap-east-1": "286214385809.dkr.ecr.ap-east-1.amazonaws.com/kmeans:1",
    "ap-northeast-1": "351501993468.dkr.ecr.ap-northeast-1.amazonaws.com/kmeans:1",
    "ap-northeast-2": "835164637446.dkr.ecr.ap-northeast-2.amazonaws.com/kmeans:1",
    "ap-northeast-3": "867004704886.dkr.ecr.ap-northeast-3.amazonaws.com/kmeans:1",
    "ap-south-1": "991648021394.dkr.ecr.ap-south-1.amazonaws.com/kmeans:1",
    "ap-south-2": "628508329040.dkr.ecr.ap-south-2.amazonaws.com/kmeans:1",
    "ap-southeast-1": "475088953585.dkr.ecr.ap-southeast-1.amazonaws.com/kmeans:1",
    "ap-southeast-2": "712309505854.dkr.ecr.ap-southeast-2.amazonaws.com/kmeans:1",
    "ap-southeast-3": "951798379941.dkr.ecr.ap-southeast-3.amazonaws.com/kmeans:1",
    "ap-southeast-4": "106583098589.dkr.ecr.ap-southeast-4.amazonaws.com/kmeans:1",
    "ca-central-1": "469771592824.dkr.ecr.ca-central-1.amazonaws.com/kmeans:1",
    "ca-west-1": "190319476487.dkr.ecr.ca-west-1.amazonaws.com/kmeans:1",
    "cn-north-1": "390948362332.dkr.ecr.cn-north-1.amazonaws.com.cn/kmeans:1",
    "cn-northwest-1": "387376663083.dkr.ecr.cn-northwest-1.amazonaws.com.cn/kmeans:1",
    "eu-central-1": "664544806723.dkr.ecr.eu-central-1.amazonaws.com/kmeans:1",
    "eu-central-2": "680994064768.dkr.ecr.eu-central-2.amazonaws.com/kmeans:1",
    "eu-north-1": "669576153137.dkr.ecr.eu-north-1.amazonaws.com/kmeans:1",
    "eu-south-1": "257386234256.dkr.ecr.eu-south-1.amazonaws.com/kmeans:1",
    "eu-south-2": "104374241257.dkr.ecr.eu-south-2.amazonaws.com/kmeans:1",
    "eu-west-1": "438346466558.dkr.ecr.eu-west-1.amazonaws.com/kmeans:1",
    "eu-west-2": "644912444149.dkr.ecr.eu-west-2.amazonaws.com/kmeans:1",
    "eu-west-3": "749696950732.dkr.ecr.eu-west-3.amazonaws.com/kmeans:1",
    "il-central-1": "898809789911.dkr.ecr.il-central-1.amazonaws.com/kmeans:1",
    "me-central-1": "272398656194.dkr.ecr.me-central-1.amazonaws.com/kmeans:1",
    "me-south-1": "249704162688.dkr.ecr.me-south-1.amazonaws.com/kmeans:1",
    "sa-east-1": "855470959533.dkr.ecr.sa-east-1.amazonaws.com/kmeans:1",
    "us-east-1": "382416733822.dkr.ecr.us-east-1.amazonaws.com/kmeans:1",
    "us-east-2": "404615174143.dkr.ecr.us-east-2.amazonaws.com/kmeans:1",
    "us-gov-east-1": "237065988967.dkr.ecr.us-gov-east-1.amazonaws.com/kmeans:1",
    "us-gov-west-1": "226302683700.dkr.ecr.us-gov-west-1.amazonaws.com/kmeans:1",
    "us-iso-east-1": "490574956308.dkr.ecr.us-iso-east-1.c2s.ic.gov/kmeans:1",
    "us-isob-east-1": "765400339828.dkr.ecr.us-isob-east-1.sc2s.sgov.gov/kmeans:1",
    "us-isof-east-1": "108575199400.dkr.ecr.us-isof-east-1.csp.hci.ic.gov/kmeans:1",
    "us-isof-south-1": "124985052026.dkr.ecr.us-isof-south-1.csp.hci.ic.gov/kmeans:1",
    "us-west-1": "632365934929.dkr.ecr.us-west-1.amazonaws.com/kmeans:1",
    "us-west-2": "174872318107.dkr.ecr.us-west-2.amazonaws.com/kmeans:1",
}


@pytest.mark.parametrize("region", sorted(EXPECTED))
def test_the_kmeans_image_of_every_region(region):
    assert images.kmeans_image(region) == EXPECTED[region]


def test_the_table_holds_exactly_those_regions():
    assert set(images.kmeans_registries()) == set(EXPECTED)


def test_an_override_wins_and_an_unknown_region_says_what_to_set():
    override = "111122223333.dkr.ecr.eu-west-1.amazonaws.com/my-kmeans:2"
    assert images.kmeans_image("xx-nowhere-1", override) == override
    with pytest.raises(ValueError, match="set the training_image context key"):
        images.kmeans_image("xx-nowhere-1")


@pytest.mark.parametrize(
    ("uri", "ok"),
    [
        ("111122223333.dkr.ecr.eu-west-1.amazonaws.com/my-kmeans:2", True),
        ("111122223333.dkr.ecr.cn-north-1.amazonaws.com.cn/team/kmeans@sha256:" + "a" * 64, True),
        ("docker.io/library/python:3.11", False),
        ("my/image:2", False),
    ],
)
def test_an_override_must_be_an_ecr_image(uri, ok):
    assert bool(images.ECR_IMAGE.fullmatch(uri)) is ok
