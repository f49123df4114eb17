"""`s3://bucket/prefix` URIs: the one definition of what this tool accepts, and joining."""

from __future__ import annotations

import re

from sagemaker_tfod.launch.errors import LaunchError

# S3 bucket naming rules: 3-63 lower-case letters, digits, dots and hyphens, starting and
# ending with a letter or digit; anything after the first "/" is the key or prefix.
_S3_URI = re.compile(r"^s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(.*))?$")


def is_s3_uri(uri: str) -> bool:
    return _S3_URI.match(uri.strip()) is not None


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/a/b/` -> ("bucket", "a/b"); a malformed URI is a user error."""
    match = _S3_URI.match(uri.strip())
    if not match:
        raise LaunchError(f"'{uri}' is not an S3 URI; write s3://bucket/prefix")
    return match.group(1), (match.group(2) or "").strip("/")


def join_s3(prefix: str, *parts: str) -> str:
    """`join_s3("s3://b/p/", "output")` -> `s3://b/p/output`."""
    return "/".join([prefix.rstrip("/"), *(part.strip("/") for part in parts)])
