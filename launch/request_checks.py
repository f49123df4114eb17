"""SageMaker's rules for what every request names: resource names, the role, the image, tags.

The request builders (`training_job.py`, `hosting_requests.py`) collect these problems and
raise them together, so one `--dry-run` shows every fix at once. Pure functions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# Training jobs, models, endpoint configs, endpoints and transform jobs share this rule.
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z\-]*:iam::\d{12}:role/\S+$")
_IMAGE_URI = re.compile(r"^\S+/\S+$")
MAX_TAGS = 50


def name_problems(what: str, name: str, flag: str) -> list[str]:
    if _NAME.match(name):
        return []
    return [f"{what} '{name}' must be 1-63 letters, digits and hyphens ({flag})"]


def role_problems(role_arn: str) -> list[str]:
    if _ROLE_ARN.match(role_arn):
        return []
    return [
        f"role '{role_arn}' is not an IAM role ARN (arn:aws:iam::123456789012:role/NAME; --role)"
    ]


def image_problems(image_uri: str) -> list[str]:
    if _IMAGE_URI.match(image_uri):
        return []
    return [f"image '{image_uri}' is not an image URI (ACCOUNT.dkr.ecr...; --image)"]


def tag_problems(tags: Mapping[str, str]) -> list[str]:
    return [f"SageMaker accepts at most {MAX_TAGS} tags"] if len(tags) > MAX_TAGS else []


def tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    """`{"team": "cv"}` -> SageMaker's `[{"Key": "team", "Value": "cv"}]`."""
    return [{"Key": key, "Value": value} for key, value in tags.items()]
