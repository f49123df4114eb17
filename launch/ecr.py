"""ECR: make sure the repository exists, log Docker in with a boto3 token, tag and push."""

from __future__ import annotations

import base64
import logging
import subprocess
from dataclasses import dataclass
from typing import Any

from sagemaker_tfod.launch.errors import LaunchError, aws_action

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DockerLogin:
    registry: str  # host name, e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com
    username: str
    password: str

    def __repr__(self) -> str:  # never print the token
        return f"DockerLogin(registry={self.registry!r}, username={self.username!r})"


def ensure_repository(ecr: Any, name: str) -> str:
    """The repository URI, creating the repository (scan on push) when it is missing."""
    with aws_action(f"looking up ECR repository '{name}'"):
        try:
            found = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
            return str(found["repositoryUri"])
        except ecr.exceptions.RepositoryNotFoundException:
            pass  # created below; any other error becomes one line via aws_action
    log.info("creating ECR repository %s", name)
    with aws_action(f"creating ECR repository '{name}'"):
        created = ecr.create_repository(
            repositoryName=name, imageScanningConfiguration={"scanOnPush": True}
        )["repository"]
    return str(created["repositoryUri"])


def parse_authorization(data: dict[str, Any]) -> DockerLogin:
    """ECR's authorizationData entry -> Docker login (the token is base64 of `user:password`)."""
    decoded = base64.b64decode(data["authorizationToken"]).decode()
    username, sep, password = decoded.partition(":")
    if not sep:
        raise LaunchError("ECR returned an authorization token without a user:password pair")
    registry = str(data["proxyEndpoint"]).removeprefix("https://").removeprefix("http://")
    return DockerLogin(registry=registry.rstrip("/"), username=username, password=password)


def docker_login(ecr: Any) -> DockerLogin:
    with aws_action("getting an ECR login token"):
        data = ecr.get_authorization_token()["authorizationData"][0]
    return parse_authorization(data)


def push_commands(docker: str, login: DockerLogin, local_image: str, remote_image: str) -> list:
    """The docker commands of a push; the password goes through stdin, never argv."""
    return [
        [docker, "login", "--username", login.username, "--password-stdin", login.registry],
        [docker, "tag", local_image, remote_image],
        [docker, "push", remote_image],
    ]


def run_push(docker: str, login: DockerLogin, local_image: str, remote_image: str) -> None:
    for command in push_commands(docker, login, local_image, remote_image):
        stdin = login.password if command[1] == "login" else None
        log.info("running %s", " ".join(command))
        try:
            result = subprocess.run(command, input=stdin, text=True, check=False)
        except FileNotFoundError as error:
            raise LaunchError(
                f"'{docker}' not found; install Docker or pass --docker PATH"
            ) from error
        if result.returncode != 0:
            raise LaunchError(
                f"'{' '.join(command[:2])}' failed with exit code {result.returncode}; "
                "is the Docker daemon running and the image built (make build)?"
            )
