"""launch against a real moto server on loopback (HTTP, no patched functions).

What moto cannot do (stop_training_job answers 500, no ResourceLimitExceeded or role errors),
is tested honestly: the 500 must become one line, and the other AWS errors come from a loopback
HTTP server that answers with AWS's own JSON error bodies.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
from launch_helpers import moto_server

from sagemaker_tfod.launch.cli import main
from sagemaker_tfod.launch.logs import LOG_GROUP
from sagemaker_tfod.launch.s3_sync import MIB, local_etag

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/SageMakerExecution"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/tf-object-detection:latest"


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """boto3 (inside the CLI too) talks to moto: endpoint and dummy keys via the environment.

    The working folder is an empty tmp folder, so a developer's ./launch.toml cannot leak in.
    """
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    for name in [key for key in os.environ if key.startswith("LAUNCH_")]:
        monkeypatch.delenv(name)
    return moto_endpoint


def _client(service: str, endpoint: str):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


class Recorder:
    """moto's request recorder: what actually reached the server."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def _post(self, action: str) -> None:
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/recorder/{action}", method="POST", data=b""
        )
        urllib.request.urlopen(request).read()

    def __enter__(self) -> Recorder:
        self._post("reset-recording")
        self._post("start-recording")
        return self

    def __exit__(self, *exc: object) -> None:
        self._post("stop-recording")

    def requests(self) -> list[dict]:
        raw = urllib.request.urlopen(f"{self.endpoint}/moto-api/recorder/download-recording")
        entries = []
        for line in raw.read().decode().splitlines():
            if line.strip():
                entry = json.loads(line)
                body = entry.get("body") or ""
                if entry.get("body_encoded"):
                    body = base64.b64decode(body)
                entry["raw_body"] = body if isinstance(body, bytes) else body.encode()
                entries.append(entry)
        return entries

    def targets(self, target: str) -> list[dict]:
        return [
            json.loads(entry["raw_body"])
            for entry in self.requests()
            if entry["headers"].get("X-Amz-Target") == target
        ]


def _bucket(endpoint: str, name: str) -> str:
    _client("s3", endpoint).create_bucket(Bucket=name)
    return name


def _make_channel(folder: Path, count: int, big: dict[str, int] | None = None) -> Path:
    folder.mkdir(parents=True)
    for index in range(count):
        (folder / f"train-{index:05d}-of-{count:05d}.tfrecord").write_bytes(
            hashlib.sha256(str(index).encode()).digest() * (10 + index)
        )
    (folder / "label_map.pbtxt").write_text("item {\n  id: 1\n  name: 'raccoon'\n}\n")
    (folder / "sub").mkdir()
    (folder / "sub" / "note.txt").write_text("nested files keep their relative path\n")
    for name, size in (big or {}).items():
        (folder / name).write_bytes(os.urandom(size))
    return folder


def _run_cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---- upload -----------------------------------------------------------------------------


def test_upload_then_reupload_skips_unchanged_and_sends_changed(aws, tmp_path, capsys):
    bucket = _bucket(aws, "upload-skip")
    channel = _make_channel(tmp_path / "channel", 6, big={"big.bin": 11 * MIB})
    uri = f"s3://{bucket}/raccoon/channel"

    code, out, _ = _run_cli(
        ["upload", str(channel), uri, "--no-progress", "--part-size-mb", "5"], capsys
    )
    assert code == 0
    first = json.loads(out)
    assert (first["uploaded"], first["skipped"]) == (9, 0)

    s3 = _client("s3", aws)
    listing = {item["Key"]: item for item in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert set(listing) == {
        f"raccoon/channel/{path.relative_to(channel).as_posix()}"
        for path in channel.rglob("*")
        if path.is_file()
    }
    body = s3.get_object(Bucket=bucket, Key="raccoon/channel/big.bin")["Body"].read()
    assert body == (channel / "big.bin").read_bytes()
    # The local checksum the skip relies on is exactly S3's multipart ETag (3 parts of 5 MiB).
    assert listing["raccoon/channel/big.bin"]["ETag"].strip('"') == local_etag(
        channel / "big.bin", 11 * MIB, 5 * MIB
    )

    # Change one file's content at the same size, add one file: only those two are sent.
    changed = channel / "train-00002-of-00006.tfrecord"
    changed.write_bytes(bytes(reversed(changed.read_bytes())))
    (channel / "eval-00000-of-00001.tfrecord").write_bytes(b"new shard")
    with Recorder(aws) as recorder:
        code, out, _ = _run_cli(
            ["upload", str(channel), uri, "--no-progress", "--part-size-mb", "5"], capsys
        )
    assert code == 0
    second = json.loads(out)
    assert (second["uploaded"], second["skipped"]) == (2, 8)
    puts = sorted(
        entry["url"].split("?")[0].rsplit("/", 1)[-1]
        for entry in recorder.requests()
        if entry["method"] == "PUT"
    )
    assert puts == ["eval-00000-of-00001.tfrecord", "train-00002-of-00006.tfrecord"]
    stored = s3.get_object(Bucket=bucket, Key="raccoon/channel/train-00002-of-00006.tfrecord")
    assert stored["Body"].read() == changed.read_bytes()

    # With the default 8 MiB parts, big.bin (sent in three 5 MiB parts) is still recognised
    # from its "-3" ETag; a pending upload of an unchanged file is aborted, not left billed.
    s3.create_multipart_upload(Bucket=bucket, Key="raccoon/channel/label_map.pbtxt")
    with Recorder(aws) as recorder:
        code, out, _ = _run_cli(["upload", str(channel), uri, "--no-progress"], capsys)
    assert code == 0
    third = json.loads(out)
    assert (third["uploaded"], third["skipped"], third["aborted_uploads"]) == (0, 10, 1)
    assert not [entry for entry in recorder.requests() if entry["method"] == "PUT"]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_interrupted_multipart_upload_resumes_with_missing_parts_only(aws, tmp_path, capsys):
    bucket = _bucket(aws, "upload-resume")
    channel = tmp_path / "channel"
    channel.mkdir()
    data = os.urandom(12 * MIB)
    (channel / "train-00000-of-00001.tfrecord").write_bytes(data)
    key = "run/channel/train-00000-of-00001.tfrecord"

    # What an interrupted earlier run leaves: a pending upload holding part 1 only, and a
    # second stale upload whose part 1 is from an older version of the file.
    s3 = _client("s3", aws)
    pending = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    s3.upload_part(Bucket=bucket, Key=key, UploadId=pending, PartNumber=1, Body=data[: 5 * MIB])
    stale = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    s3.upload_part(Bucket=bucket, Key=key, UploadId=stale, PartNumber=1, Body=b"0" * 5 * MIB)

    with Recorder(aws) as recorder:
        code, out, _ = _run_cli(
            [
                "upload",
                str(channel),
                f"s3://{bucket}/run/channel",
                "--no-progress",
                "--part-size-mb",
                "5",
            ],
            capsys,
        )
    assert code == 0
    report = json.loads(out)
    assert report["resumed_parts"] == 1
    assert report["bytes_sent"] == len(data) - 5 * MIB
    sent_parts = sorted(
        int(entry["url"].split("partNumber=")[1].split("&")[0])
        for entry in recorder.requests()
        if entry["method"] == "PUT" and "partNumber=" in entry["url"]
    )
    assert sent_parts == [2, 3]
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_upload_to_missing_bucket_is_one_line(aws, tmp_path, capsys):
    channel = _make_channel(tmp_path / "channel", 2)
    code, out, err = _run_cli(["upload", str(channel), "s3://no-such-bucket-here/x"], capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert "bucket 'no-such-bucket-here' does not exist" in err
    assert "Traceback" not in err


# ---- train / status / logs / stop / download --------------------------------------------


def _train_args(bucket: str, job: str) -> list[str]:
    return [
        "train",
        "--role", ROLE,
        "--image", IMAGE,
        "--s3-prefix", f"s3://{bucket}/raccoon",
        "--init-checkpoint-s3-uri", f"s3://{bucket}/pretrained/ckpt",
        "--job-name", job,
        "--instance-type", "ml.g4dn.xlarge",
        "--max-runtime", "3600",
        "--hp", "num_steps=1500",
        "--hp", "quantize=true",
        "--tag", "project=raccoon",
    ]  # fmt: skip


def test_train_request_as_it_reached_the_server(aws, tmp_path, capsys, monkeypatch):
    from sagemaker_tfod.container.metrics import METRIC_DEFINITIONS

    bucket = _bucket(aws, "train-request")
    config = tmp_path / "launch.toml"
    config.write_text(
        "[hyperparameters]\nbatch_size = 8\nrandom_flip = false\nlearning_rate = 0.01\n"
        '[tags]\nowner = "ml-team"\n'
    )
    with Recorder(aws) as recorder:
        code, out, err = _run_cli(
            [*_train_args(bucket, "job-request-1"), "--config", str(config)], capsys
        )
    assert code == 0, err
    assert json.loads(out)["TrainingJobName"] == "job-request-1"
    (sent,) = recorder.targets("SageMaker.CreateTrainingJob")

    channels = {item["ChannelName"]: item for item in sent["InputDataConfig"]}
    assert set(channels) == {"training", "checkpoint"}
    assert channels["training"]["DataSource"]["S3DataSource"]["S3Uri"] == (
        f"s3://{bucket}/raccoon/channel"
    )
    assert channels["checkpoint"]["DataSource"]["S3DataSource"]["S3Uri"] == (
        f"s3://{bucket}/pretrained/ckpt"
    )
    assert sent["EnableManagedSpotTraining"] is True
    assert sent["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert sent["CheckpointConfig"] == {
        "S3Uri": f"s3://{bucket}/raccoon/checkpoints/job-request-1",
        "LocalPath": "/opt/ml/checkpoints",
    }
    assert sent["AlgorithmSpecification"]["MetricDefinitions"] == METRIC_DEFINITIONS
    assert sent["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert sent["HyperParameters"] == {
        "num_steps": "1500",
        "quantize": "true",
        "batch_size": "8",
        "random_flip": "false",
        "learning_rate": "0.01",
    }
    assert all(isinstance(value, str) for value in sent["HyperParameters"].values())
    assert sent["TensorBoardOutputConfig"] == {
        "S3OutputPath": f"s3://{bucket}/raccoon/tensorboard/job-request-1",
        "LocalPath": "/opt/ml/output/tensorboard",
    }
    assert sent["OutputDataConfig"] == {"S3OutputPath": f"s3://{bucket}/raccoon/output"}
    assert sent["RoleArn"] == ROLE
    assert {tag["Key"]: tag["Value"] for tag in sent["Tags"]} == {
        "project": "raccoon",
        "owner": "ml-team",
    }

    # --dry-run prints exactly this request (same settings, nothing sent).
    with Recorder(aws) as recorder:
        code, out, _ = _run_cli(
            [*_train_args(bucket, "job-request-1"), "--config", str(config), "--dry-run"], capsys
        )
    assert code == 0
    assert json.loads(out) == sent
    assert recorder.requests() == []

    # status reads it back: spot and the checkpoint URI as sent.
    code, out, _ = _run_cli(["status", "job-request-1"], capsys)
    assert code == 0
    status = json.loads(out)
    assert status["EnableManagedSpotTraining"] is True
    assert status["CheckpointS3Uri"] == f"s3://{bucket}/raccoon/checkpoints/job-request-1"
    assert status["TrainingJobStatus"] in ("InProgress", "Completed")


def test_train_pretrained_uploads_once_and_names_the_channel(
    aws, trained_run, tmp_path, capsys, monkeypatch, caplog
):
    """`train --pretrained NAME`: fetched from a loopback stand-in for storage.googleapis.com,
    uploaded to S3_PREFIX/pretrained/NAME as the checkpoint channel (skipped when unchanged),
    preset and modules set; a dry run sends nothing."""
    from conftest import checkpoint_archive
    from launch_helpers import FileServer

    from sagemaker_tfod.launch import pretrained

    caplog.set_level("INFO", logger="sagemaker_tfod.launch")
    bucket = _bucket(aws, "train-pretrained")
    name = "mobilenetv2_256_coco"
    archive = checkpoint_archive(trained_run.checkpoint_dir, tmp_path / "a.tar.gz").read_bytes()
    path = urllib.parse.urlparse(pretrained.CATALOGUE[name].files[0].url).path
    monkeypatch.setenv("LAUNCH_PRETRAINED_CACHE", str(tmp_path / "cache"))
    arguments = [
        "train", "--role", ROLE, "--image", IMAGE, "--s3-prefix", f"s3://{bucket}/raccoon",
        "--pretrained", name, "--hp", "num_steps=100",
    ]  # fmt: skip
    channel_uri = f"s3://{bucket}/raccoon/pretrained/{name}"

    server = FileServer({path: archive})
    with server as url:
        monkeypatch.setenv("LAUNCH_PRETRAINED_MIRROR", url)
        with Recorder(aws) as recorder:
            code, out, err = _run_cli([*arguments, "--dry-run"], capsys)
        assert code == 0, err
        assert recorder.requests() == [] and server.requests == []  # a dry run sends nothing
        dry = json.loads(out)

        for job in ("job-pretrained-1", "job-pretrained-2"):
            with Recorder(aws) as recorder:
                code, out, err = _run_cli([*arguments, "--job-name", job], capsys)
            assert code == 0, err
            (sent,) = recorder.targets("SageMaker.CreateTrainingJob")
            puts = [
                entry for entry in recorder.requests()
                if entry["method"] in ("PUT", "POST") and "/pretrained/" in entry["url"]
            ]  # fmt: skip
            channels = {item["ChannelName"]: item for item in sent["InputDataConfig"]}
            assert channels["checkpoint"]["DataSource"]["S3DataSource"]["S3Uri"] == channel_uri
            assert sent["HyperParameters"] == {
                "num_steps": "100",
                "model": "retinanet_mobilenetv2_fpnlite_256",
                "init_checkpoint_modules": "backbone,decoder",
            }
            if job.endswith("-1"):
                assert len(puts) == 1, puts  # the archive, once
            else:
                assert puts == [], puts  # unchanged: skipped
                assert "0 uploaded, 1 unchanged (skipped)" in caplog.text
    assert len(server.requests) == 1  # fetched once, then from the cache
    assert dry["InputDataConfig"] == sent["InputDataConfig"]
    body = (
        _client("s3", aws)
        .get_object(
            Bucket=bucket, Key=f"raccoon/pretrained/{name}/mobilenetv2_ssd_i256_ckpt.tar.gz"
        )["Body"]
        .read()
    )
    assert body == archive

    # A preset that does not fit the weights is refused before anything is sent.
    code, _, err = _run_cli([*arguments, "--hp", "model=retinanet_resnet50_fpn_640"], capsys)
    assert code == 2
    assert "fits model=retinanet_mobilenetv2_fpnlite_256" in err


def test_train_settings_from_environment_and_missing_ones(aws, tmp_path, capsys, monkeypatch):
    bucket = _bucket(aws, "train-env")
    monkeypatch.chdir(tmp_path)  # no launch.toml here
    code, _, err = _run_cli(["train", "--job-name", "job-env-1"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 4  # role, image, training_s3_uri, output_s3_uri: one line each
    assert all(line.startswith("error: missing setting") for line in lines)
    assert "--role" in lines[0] and "LAUNCH_ROLE" in lines[0] and "launch.toml" in lines[0]

    monkeypatch.setenv("LAUNCH_ROLE", ROLE)
    monkeypatch.setenv("LAUNCH_IMAGE", IMAGE)
    monkeypatch.setenv("LAUNCH_S3_PREFIX", f"s3://{bucket}/p")
    monkeypatch.setenv("LAUNCH_SPOT", "false")
    with Recorder(aws) as recorder:
        code, _, err = _run_cli(["train", "--job-name", "job-env-1"], capsys)
    assert code == 0, err
    (sent,) = recorder.targets("SageMaker.CreateTrainingJob")
    assert sent["EnableManagedSpotTraining"] is False
    assert "MaxWaitTimeInSeconds" not in sent["StoppingCondition"]
    assert sent["RoleArn"] == ROLE


def test_train_wait_streams_status_and_cloudwatch_lines(aws, capsys):
    bucket = _bucket(aws, "train-wait")
    logs = _client("logs", aws)
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=LOG_GROUP)
    stream = "job-wait-1/algo-1-1700000000"
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
    now = int(time.time() * 1000)
    lines = [
        "metric step=50 total_loss=1.2345 learning_rate=0.001 steps_per_sec=2.5",
        "metric step=100 AP=0.4 AP50=0.8 AP75=0.3",
    ]
    logs.put_log_events(
        logGroupName=LOG_GROUP,
        logStreamName=stream,
        logEvents=[{"timestamp": now + i, "message": line} for i, line in enumerate(lines)],
    )
    code, out, err = _run_cli(
        [*_train_args(bucket, "job-wait-1"), "--wait", "--poll-seconds", "0.1"], capsys
    )
    assert code == 0, err
    printed = out.splitlines()
    assert any(line.startswith("[job-wait-1] Completed") for line in printed)
    assert printed[-2:] == lines

    # `logs` prints the same lines on their own.
    code, out, _ = _run_cli(["logs", "job-wait-1"], capsys)
    assert code == 0
    assert out.splitlines() == lines


def test_stop_server_error_becomes_one_line(aws, capsys):
    bucket = _bucket(aws, "train-stop")
    assert _run_cli(_train_args(bucket, "job-stop-1"), capsys)[0] == 0
    # moto does not implement StopTrainingJob and answers HTTP 500 with an HTML page.
    result = subprocess.run(
        [sys.executable, "-m", "launch", "stop", "job-stop-1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: stopping training job 'job-stop-1' failed:")
    assert "HTTP 500" in result.stderr
    assert "<" not in result.stderr and "Traceback" not in result.stderr


def test_status_of_unknown_job_is_one_line(aws, capsys):
    code, out, err = _run_cli(["status", "no-such-job"], capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert "Could not find training job" in err and "--region" in err


def _model_tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_download_unpacks_the_jobs_model_for_edge(aws, tmp_path, capsys):
    bucket = _bucket(aws, "train-download")
    assert _run_cli(_train_args(bucket, "job-download-1"), capsys)[0] == 0
    artifact = _client("sagemaker", aws).describe_training_job(TrainingJobName="job-download-1")[
        "ModelArtifacts"
    ]["S3ModelArtifacts"]
    files = {
        "model.tflite": b"TFL3-fake-flatbuffer",
        "labels.txt": b"raccoon\n",
        "label_map.pbtxt": b"item { id: 1 name: 'raccoon' }\n",
        "pipeline.yaml": b"task: {}\n",
        "saved_model/saved_model.pb": b"pb",
    }
    s3_bucket, _, key = artifact.removeprefix("s3://").partition("/")
    assert s3_bucket == bucket
    _client("s3", aws).put_object(Bucket=bucket, Key=key, Body=_model_tar(files))

    destination = tmp_path / "models" / "raccoon"
    code, out, err = _run_cli(["download", "job-download-1", str(destination)], capsys)
    assert code == 0, err
    assert json.loads(out)["source"] == artifact
    for name, data in files.items():
        assert (destination / name).read_bytes() == data
    assert [p.name for p in destination.parent.iterdir()] == ["raccoon"]  # no temp left over

    # A non-empty destination is refused unless --force.
    code, _, err = _run_cli(["download", artifact, str(destination)], capsys)
    assert code == 2 and "--force" in err
    code, _, _ = _run_cli(["download", artifact, str(destination), "--force"], capsys)
    assert code == 0


def test_download_refuses_archive_escaping_the_folder(aws, tmp_path, capsys):
    bucket = _bucket(aws, "download-unsafe")
    _client("s3", aws).put_object(
        Bucket=bucket, Key="m/model.tar.gz", Body=_model_tar({"../escape.txt": b"x"})
    )
    code, _, err = _run_cli(
        ["download", f"s3://{bucket}/m/model.tar.gz", str(tmp_path / "out")], capsys
    )
    assert code == 2
    assert err == "error: model.tar.gz has unsafe member ../escape.txt; refused\n"
    assert not (tmp_path / "escape.txt").exists()
    assert not (tmp_path / "out").exists()


def test_download_to_an_existing_file_is_one_line(aws, tmp_path, capsys):
    bucket = _bucket(aws, "download-to-file")
    _client("s3", aws).put_object(
        Bucket=bucket, Key="m/model.tar.gz", Body=_model_tar({"labels.txt": b"raccoon\n"})
    )
    target = tmp_path / "models.txt"
    target.write_text("not a folder")
    for extra in ([], ["--force"]):
        code, out, err = _run_cli(
            ["download", f"s3://{bucket}/m/model.tar.gz", str(target), *extra], capsys
        )
        assert code == 2
        assert out == ""
        assert err == f"error: {target}: is a file, not a folder; pass a folder to unpack into\n"
        assert target.read_text() == "not a folder"


# ---- ECR --------------------------------------------------------------------------------


def test_push_creates_repository_and_logs_docker_in_via_stdin(aws, tmp_path, capsys):
    # A stand-in docker client that records its arguments and stdin (no Docker engine here).
    record = tmp_path / "docker-calls.jsonl"
    docker = tmp_path / "docker"
    docker.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        "data = sys.stdin.read() if sys.argv[1] == 'login' else ''\n"
        f"open({str(record)!r}, 'a').write(json.dumps([sys.argv[1:], data]) + '\\n')\n"
    )
    docker.chmod(0o755)
    code, out, err = _run_cli(
        ["push", "tf-od:dev", "--repository", "tf-od-push", "--tag", "v1", "--docker", str(docker)],
        capsys,
    )
    assert code == 0, err
    repository = _client("ecr", aws).describe_repositories(repositoryNames=["tf-od-push"])
    uri = repository["repositories"][0]["repositoryUri"]
    assert out.strip() == f"{uri}:v1"

    token = _client("ecr", aws).get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(token["authorizationToken"]).decode().partition(":")
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    registry = token["proxyEndpoint"].removeprefix("https://")
    assert calls == [
        [["login", "--username", user, "--password-stdin", registry], password],
        [["tag", "tf-od:dev", f"{uri}:v1"], ""],
        [["push", f"{uri}:v1"], ""],
    ]
    assert all(password not in " ".join(args) for args, _ in calls)

    # Second push: the repository exists already and is reused.
    code, out, _ = _run_cli(
        ["push", "tf-od:dev", "--repository", "tf-od-push", "--docker", str(docker)], capsys
    )
    assert code == 0 and out.strip() == f"{uri}:latest"


# ---- AWS errors -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def iam_enforcing_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second moto server that enforces IAM after the first 4 (setup) requests."""
    with moto_server(
        tmp_path_factory.mktemp("moto-iam"), {"INITIAL_NO_AUTH_ACTION_COUNT": "4"}
    ) as endpoint:
        yield endpoint


def test_access_denied_is_one_line(iam_enforcing_moto, tmp_path, capsys, monkeypatch):
    endpoint = iam_enforcing_moto
    iam = _client("iam", endpoint)
    iam.create_user(UserName="reader")
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": "*"}],
    }
    iam.put_user_policy(UserName="reader", PolicyName="list", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    _client("s3", endpoint).create_bucket(Bucket="locked-bucket")

    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.setenv("AWS_REGION", REGION)
    channel = _make_channel(tmp_path / "channel", 1)
    code, out, err = _run_cli(
        ["upload", str(channel), "s3://locked-bucket/x", "--no-progress"], capsys
    )
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert "access denied" in err and "aws_credentials/README.md" in err


class _AwsErrorHandler(BaseHTTPRequestHandler):
    """Answers every SageMaker JSON call with the error body AWS sends for that case."""

    error_type = ""
    message = ""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"__type": self.error_type, "Message": self.message}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    ("error_type", "message", "expected"),
    [
        (
            "ResourceLimitExceeded",
            "The account-level service limit 'ml.g4dn.xlarge for spot training job usage' is 0 "
            "Instances, with current utilization of 0 Instances and a request delta of 1 "
            "Instances. Please use AWS Service Quotas to request an increase for this quota.",
            "quota exceeded",
        ),
        (
            "ValidationException",
            f"Could not assume role {ROLE}. Please ensure that the role exists and allows "
            "principal 'sagemaker.amazonaws.com' to assume the role.",
            "cannot use the execution role",
        ),
    ],
)
def test_sagemaker_errors_become_one_line(error_type, message, expected, capsys, monkeypatch):
    handler = type("Handler", (_AwsErrorHandler,), {"error_type": error_type, "message": message})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_port}")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_REGION", REGION)
        code, out, err = _run_cli(_train_args("some-bucket", "job-error-1"), capsys)
    finally:
        server.shutdown()
        server.server_close()
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith("error: creating training job 'job-error-1' failed:")
    assert expected in err
