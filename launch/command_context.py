"""What every `launch` command reads before it acts: its settings and its AWS clients.

A setting comes from the command's flag, else its `LAUNCH_*` environment variable, else
launch.toml (`settings.resolve` is the pure rule); the region falls back to `AWS_REGION`.
Clients use boto3's own credential chain (an IAM role, a profile, or the variables), so no
secret passes through these tools.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from sagemaker_tfod.launch import settings
from sagemaker_tfod.launch.errors import aws_action


def read_config(args: argparse.Namespace) -> dict[str, Any]:
    """The launch.toml named by `--config` (or found by default), as a table."""
    return settings.load_config_file(args.config)


def resolve_settings(
    args: argparse.Namespace,
    config: dict[str, Any],
    names: Sequence[str],
    required: Sequence[str] = (),
) -> dict[str, Any]:
    """settings.resolve with this command's flags, the environment and the file actually read."""
    return settings.resolve(
        names, vars(args), os.environ, config, required, settings.config_file_name(args.config)
    )


def resolve_region(args: argparse.Namespace, config: dict[str, Any]) -> str | None:
    region = resolve_settings(args, config, ["region"])["region"]
    # AWS_REGION is what many tools and containers set; boto3 itself reads AWS_DEFAULT_REGION.
    return region or os.environ.get("AWS_REGION") or None


def make_client(service: str, region: str | None, pool: int = 10) -> Any:
    """A boto3 client from boto3's own credential chain; AWS_ENDPOINT_URL is honoured by boto3."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": 3, "mode": "standard"},
        max_pool_connections=pool,
        user_agent_extra="tf-od-launch",
    )
    with aws_action(f"creating the {service} client"):
        return boto3.session.Session(region_name=region).client(service, config=config)
