"""Follow a training job: status transitions and its CloudWatch log lines until it ends."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from botocore.exceptions import ClientError

from sagemaker_tfod.launch.errors import aws_action

log = logging.getLogger(__name__)

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TERMINAL_STATUSES = ("Completed", "Failed", "Stopped")


@dataclass(frozen=True)
class LogLine:
    stream: str
    timestamp: int
    message: str


@dataclass
class LogFollower:
    """Reads new events of every `JOB/...` stream (one per instance) since the last poll."""

    logs: Any
    job_name: str
    tokens: dict[str, str] = field(default_factory=dict)

    def poll(self) -> list[LogLine]:
        lines: list[LogLine] = []
        for stream in self._streams():
            lines += self._read_stream(stream)
        return sorted(lines, key=lambda line: (line.timestamp, line.stream))

    def _streams(self) -> list[str]:
        names: list[str] = []
        with aws_action(f"listing the log streams of {self.job_name}"):
            try:
                paginator = self.logs.get_paginator("describe_log_streams")
                for page in paginator.paginate(
                    logGroupName=LOG_GROUP, logStreamNamePrefix=f"{self.job_name}/"
                ):
                    names += [item["logStreamName"] for item in page.get("logStreams", [])]
            except ClientError as error:
                # The group and streams appear only once the instance starts.
                if error.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                    raise
        return names

    def _read_stream(self, stream: str) -> list[LogLine]:
        lines: list[LogLine] = []
        with aws_action(f"reading log stream {stream}"):
            while True:
                kwargs: dict[str, Any] = {
                    "logGroupName": LOG_GROUP,
                    "logStreamName": stream,
                    "startFromHead": True,
                }
                if stream in self.tokens:
                    kwargs["nextToken"] = self.tokens[stream]
                page = self.logs.get_log_events(**kwargs)
                events = page.get("events", [])
                lines += [LogLine(stream, int(e["timestamp"]), e["message"]) for e in events]
                token = page.get("nextForwardToken")
                unchanged = token == self.tokens.get(stream)
                if token:
                    self.tokens[stream] = token
                if not events or unchanged:
                    return lines


def status_line(description: dict[str, Any]) -> str:
    """`Training - Training image download completed. Training in progress.` style summary."""
    secondary = description.get("SecondaryStatus") or description.get("TrainingJobStatus", "")
    transitions = description.get("SecondaryStatusTransitions") or []
    message = transitions[-1].get("StatusMessage", "") if transitions else ""
    return f"{description.get('TrainingJobStatus', '?')} - {secondary}" + (
        f": {message}" if message else ""
    )


def describe_job(sagemaker: Any, job_name: str) -> dict[str, Any]:
    with aws_action(f"describing training job '{job_name}'"):
        description = sagemaker.describe_training_job(TrainingJobName=job_name)
    description.pop("ResponseMetadata", None)
    return description


def follow_job(
    sagemaker: Any,
    logs: Any,
    job_name: str,
    out: TextIO,
    poll_seconds: float = 15.0,
    stream_logs: bool = True,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Print status changes and log lines until the job reaches a terminal status."""
    follower = LogFollower(logs, job_name)
    last_status = ""
    while True:
        description = describe_job(sagemaker, job_name)
        current = status_line(description)
        if current != last_status:
            out.write(f"[{job_name}] {current}\n")
            last_status = current
        if stream_logs:
            for line in follower.poll():
                out.write(f"{line.message}\n")
        out.flush()
        if description.get("TrainingJobStatus") in TERMINAL_STATUSES:
            return description
        sleep(poll_seconds)
