"""One exception type for errors a user can fix, and the AWS error -> one-line message map.

botocore raises ClientError with a service error code; the codes below are the ones a user of
this tool meets when a bucket, a role, a quota or a permission is wrong. Anything unmapped still
becomes one line (code + the service's own message), never a traceback.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from boto3.exceptions import Boto3Error, RetriesExceededError
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

CREDENTIALS_HELP = "see aws_credentials/README.md (AWS_PROFILE or AWS_ACCESS_KEY_ID/...)"
CREDENTIAL_CODES = (
    "InvalidAccessKeyId",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
)
EXPIRED_CODES = ("ExpiredToken", "ExpiredTokenException", "RequestExpired")


_WRAPPED_CLIENT_ERROR = re.compile(
    r"An error occurred \((\w+)\) when calling the \w+ operation: (.*)"
)


class LaunchError(Exception):
    """An error the user can fix; the CLI prints its message on one line and exits non-zero."""

    exit_code = 2


class JobEndedError(LaunchError):
    """The training job ended Failed or Stopped: the request was fine, the job was not."""

    exit_code = 1


def _one_line(text: str, limit: int = 300) -> str:
    """Collapse whitespace (HTML error pages, multi-line messages) and cap the length."""
    flat = re.sub(r"<[^>]+>", " ", text)
    flat = " ".join(flat.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def describe_client_error(error: ClientError, action: str) -> str:
    """The one-line message for a botocore ClientError raised while doing `action`."""
    details = error.response.get("Error", {})
    code = str(details.get("Code", ""))
    message = _one_line(str(details.get("Message", "")))
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    lowered = message.lower()

    if code == "NoSuchBucket":
        bucket = details.get("BucketName", "")
        name = f"'{bucket}' " if bucket else ""
        return (
            f"{action} failed: S3 bucket {name}does not exist; create it "
            f"(aws s3 mb s3://{bucket or 'BUCKET'}) or fix the s3:// URI"
        )
    if code in ("NoSuchKey", "404") or (code == "" and status == 404):
        return f"{action} failed: not found (check the s3:// URI or the job name)"
    # Credential codes first: S3 answers InvalidAccessKeyId, SignatureDoesNotMatch and
    # ExpiredToken with HTTP 403 too, and "access denied" would send the user the wrong way.
    if code in CREDENTIAL_CODES:
        return f"{action} failed: AWS rejected the credentials ({code}); {CREDENTIALS_HELP}"
    if code in EXPIRED_CODES:
        return f"{action} failed: the AWS session expired; renew it (aws sso login / new keys)"
    if code in ("AccessDenied", "AccessDeniedException", "403", "Forbidden") or status == 403:
        return (
            f"{action} failed: access denied ({message or code}); the credentials in use lack "
            f"the permission, or the bucket belongs to another account; {CREDENTIALS_HELP}"
        )
    if code == "ResourceLimitExceeded":
        return (
            f"{action} failed: quota exceeded ({message}); request an increase in Service "
            "Quotas (SageMaker, 'INSTANCE_TYPE for training job usage' or '... for spot "
            "training job usage'), use another instance type, or stop a running job"
        )
    if code == "ResourceInUse":
        return f"{action} failed: {message}; pick another --job-name"
    if code == "ValidationException" and ("assume" in lowered or "role" in lowered):
        return (
            f"{action} failed: SageMaker cannot use the execution role ({message}); the role "
            "ARN must exist and trust sagemaker.amazonaws.com, and your credentials need "
            "iam:PassRole on it (--role / LAUNCH_ROLE / role in launch.toml)"
        )
    if code == "ValidationException" and "could not find" in lowered:
        return f"{action} failed: {message} (check the name and --region)"
    if code == "ValidationException":
        return f"{action} failed: the request was rejected: {message}"
    if code == "ModelError":
        # SageMaker Runtime: the container answered non-200; its own one-line error is inside.
        original = str(error.response.get("OriginalMessage") or details.get("OriginalMessage", ""))
        original_status = error.response.get("OriginalStatusCode") or details.get(
            "OriginalStatusCode"
        )
        with suppress(ValueError, AttributeError):  # not our JSON: keep the text as it is
            original = str(json.loads(original).get("error", original))
        return (
            f"{action} failed: the model container answered HTTP {original_status or '?'}: "
            f"{_one_line(original or message)}"
        )
    if code == "RepositoryNotFoundException":
        return f"{action} failed: {message}"
    if status is not None and int(status) >= 500:
        body = f": {message}" if message and not message.lower().startswith("internal") else ""
        return (
            f"{action} failed: the service answered HTTP {status} (a server-side error, or an "
            f"operation this endpoint does not implement){body}"
        )
    return f"{action} failed: {code or 'error'}: {message or 'no message'}"


def describe_aws_exception(error: Exception, action: str) -> str:
    """One line for any botocore exception (client errors, credentials, region, network)."""
    if isinstance(error, ClientError):
        return describe_client_error(error, action)
    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return f"{action} failed: no usable AWS credentials; {CREDENTIALS_HELP}"
    if isinstance(error, NoRegionError):
        return (
            f"{action} failed: no AWS region; pass --region, set AWS_DEFAULT_REGION, or put "
            'region = "..." in launch.toml'
        )
    if isinstance(error, EndpointConnectionError):
        return f"{action} failed: cannot reach the AWS endpoint ({_one_line(str(error))})"
    if isinstance(error, RetriesExceededError):
        return (
            f"{action} failed: the transfer still failed after retries "
            f"({_one_line(str(error.last_exception or error))}); check the network, then run "
            "the same command again"
        )
    if isinstance(error, Boto3Error):
        # boto3's transfer manager (upload_file, download_file) wraps the service's error in
        # text; recover its code so e.g. NoSuchBucket reads as it does everywhere else.
        found = _WRAPPED_CLIENT_ERROR.search(str(error))
        if found:
            wrapped = {"Error": {"Code": found.group(1), "Message": found.group(2)}}
            return describe_client_error(ClientError(wrapped, "transfer"), action)
    return f"{action} failed: {_one_line(str(error))}"


@contextmanager
def aws_action(action: str) -> Iterator[None]:
    """Turn any botocore error raised inside the block into a LaunchError naming `action`."""
    try:
        yield
    except (ClientError, BotoCoreError, Boto3Error) as error:
        raise LaunchError(describe_aws_exception(error, action)) from error
