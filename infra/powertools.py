"""The Powertools for AWS Lambda (Python) layer every celery-fleet Lambda runs with.

One version, the one the tests run (requirements-dev.txt pins it; tests/infra/test_deploy_risks.py
ties the two). The layer's ARN is not written here: Powertools publishes, in each region it serves,
the public SSM parameter `/aws/service/powertools/python/<arch>/<python>/<version>` holding the ARN
of the layer that ships exactly that version, and CloudFormation resolves it at deploy time (synth
makes no AWS call). A layer number copied from the documentation drifts from the tested version;
this cannot.
"""

from __future__ import annotations

POWERTOOLS_VERSION = "3.37.0"
# The Lambdas' runtime and architecture (infra/functions.py); the layer is built per pair.
LAYER_PYTHON = "python3.14"
LAYER_ARCHITECTURE = "arm64"

# Regions Powertools' documentation lists for its Python v3 layer (docs/includes/_layer_homepage_arm64.md
# in aws-powertools/powertools-lambda-python). Elsewhere the parameter does not exist and the deploy
# would fail, so synth refuses such a region up front (aws.region).
POWERTOOLS_REGIONS = (
    "af-south-1",
    "ap-east-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-7",
    "ca-central-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
)


def layer_parameter_name(version: str = POWERTOOLS_VERSION) -> str:
    """The public SSM parameter whose value is the ARN of the layer shipping `version`."""
    return f"/aws/service/powertools/python/{LAYER_ARCHITECTURE}/{LAYER_PYTHON}/{version}"
