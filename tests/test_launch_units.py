"""The pure parts of launch: settings, the job request, S3 sync logic, errors, the local tree."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from datetime import datetime
from pathlib import Path

import pytest
from boto3.exceptions import RetriesExceededError, S3TransferFailedError, S3UploadFailedError
from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError
from launch_helpers import sagemaker_metrics

from sagemaker_tfod.container.metrics import METRIC_DEFINITIONS, format_metric_line
from sagemaker_tfod.container.sagemaker_env import SageMakerEnv
from sagemaker_tfod.launch import artifacts, local, s3_sync, s3_uri, settings, training_job
from sagemaker_tfod.launch.cli import build_parser, main
from sagemaker_tfod.launch.commands import check_job_outcome, job_summary, training_spec
from sagemaker_tfod.launch.ecr import parse_authorization, push_commands
from sagemaker_tfod.launch.errors import (
    JobEndedError,
    LaunchError,
    aws_action,
    describe_aws_exception,
)
from sagemaker_tfod.launch.logs import status_line

ROOT = Path(__file__).resolve().parent.parent
ROLE = "arn:aws:iam::123456789012:role/SageMakerExecution"
IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/tf-od:1"


# ---- settings -----------------------------------------------------------------------------


def test_precedence_flag_over_env_over_file_over_default():
    names = ["instance_type", "volume_gb", "spot", "role"]
    config = {"instance_type": "ml.p3.2xlarge", "volume_gb": 80, "spot": False, "role": ROLE}
    env = {"LAUNCH_VOLUME_GB": "120", "LAUNCH_SPOT": "yes"}
    values = settings.resolve(names, {"instance_type": "ml.g5.xlarge"}, env, config)
    assert values == {
        "instance_type": "ml.g5.xlarge",  # flag
        "volume_gb": 120,  # environment, converted to int
        "spot": True,  # environment beats the file's false
        "role": ROLE,  # file
    }
    assert settings.resolve(["instance_type"], {}, {}, {})["instance_type"] == "ml.g4dn.xlarge"


def test_each_missing_setting_is_its_own_clear_line():
    with pytest.raises(LaunchError) as error:
        settings.resolve(["role", "image", "region"], {}, {}, {}, required=["role", "image"])
    lines = str(error.value).splitlines()
    assert len(lines) == 2
    assert "'role'" in lines[0] and "--role" in lines[0] and "LAUNCH_ROLE" in lines[0]
    assert "'image'" in lines[1] and "--image" in lines[1] and "launch.toml" in lines[1]


@pytest.mark.parametrize(
    ("name", "raw", "fragment"),
    [("volume_gb", "fifty", "not an integer"), ("spot", "maybe", "not a boolean")],
)
def test_bad_values_name_their_source(name, raw, fragment):
    with pytest.raises(LaunchError, match=f"LAUNCH_{name.upper()}: '{raw}' is {fragment}"):
        settings.resolve([name], {}, {f"LAUNCH_{name.upper()}": raw}, {})


def test_config_file_errors(tmp_path):
    bad = tmp_path / "launch.toml"
    bad.write_text("role = 'x'\nrgion = 'eu-west-1'\n")
    with pytest.raises(LaunchError, match=r"unknown key\(s\) rgion; known keys: .*region"):
        settings.load_config_file(bad)
    bad.write_text("role = \n")
    with pytest.raises(LaunchError, match="not valid TOML"):
        settings.load_config_file(bad)
    with pytest.raises(LaunchError, match="config file not found"):
        settings.load_config_file(tmp_path / "missing.toml")


@pytest.fixture
def clean_settings(tmp_path, monkeypatch):
    """An empty working folder (no launch.toml) and no LAUNCH_* variables from the shell."""
    monkeypatch.chdir(tmp_path)
    for name in [key for key in os.environ if key.startswith("LAUNCH_")]:
        monkeypatch.delenv(name)


def test_missing_setting_names_the_config_file_in_use(tmp_path, capsys, clean_settings):
    other = tmp_path / "other.toml"
    other.write_text('image = "x/y:1"\nvolume_gb = "big"\n')
    assert main(["train", "--config", str(other), "--s3-prefix", "s3://my-bucket/p"]) == 2
    err = capsys.readouterr().err
    assert f"{other}: volume_gb: 'big' is not an integer" in err
    other.write_text('image = "x/y:1"\n')
    assert main(["train", "--config", str(other), "--s3-prefix", "s3://my-bucket/p"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: missing setting 'role'")
    assert lines[0].endswith(f'add role = "..." to {other}')


def test_key_value_flags():
    assert settings.parse_key_values(["num_steps=10", "a = b=c"], "--hp") == {
        "num_steps": "10",
        "a": "b=c",
    }
    with pytest.raises(LaunchError, match="--hp 'num_steps' is not KEY=VALUE"):
        settings.parse_key_values(["num_steps"], "--hp")


def test_every_command_has_help(capsys):
    for command in ("upload", "train", "status", "logs", "stop", "download", "local", "push"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert f"python -m launch {command}" in capsys.readouterr().out


# ---- the request ------------------------------------------------------------------------


def _spec(**overrides) -> training_job.TrainingJobSpec:
    values = {
        "job_name": "tf-od-1",
        "image_uri": IMAGE,
        "role_arn": ROLE,
        "training_s3_uri": "s3://my-bucket/p/channel",
        "output_s3_uri": "s3://my-bucket/p/output",
        "checkpoint_s3_uri": "s3://my-bucket/p/checkpoints/tf-od-1",
        "instance_type": "ml.g4dn.xlarge",
        "hyperparameters": {"num_steps": "100"},
    }
    values.update(overrides)
    return training_job.TrainingJobSpec(**values)


def test_request_spot_checkpoints_metrics_tensorboard_tags():
    spec = _spec(
        max_runtime_s=1000,
        init_checkpoint_s3_uri="s3://my-bucket/ckpt",
        tensorboard_s3_uri="s3://my-bucket/tb",
        tags={"team": "vision"},
    )
    request = training_job.build_create_training_job_request(spec, METRIC_DEFINITIONS)
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {
        "MaxRuntimeInSeconds": 1000,
        "MaxWaitTimeInSeconds": 2000,
    }
    assert request["CheckpointConfig"]["LocalPath"] == str(
        SageMakerEnv(Path("/opt/ml")).checkpoints_dir
    )
    assert request["TensorBoardOutputConfig"]["LocalPath"] == str(
        SageMakerEnv(Path("/opt/ml")).tensorboard_dir
    )
    assert [c["ChannelName"] for c in request["InputDataConfig"]] == ["training", "checkpoint"]
    assert request["AlgorithmSpecification"]["MetricDefinitions"] == METRIC_DEFINITIONS
    assert request["Tags"] == [{"Key": "team", "Value": "vision"}]
    json.dumps(request)  # the dry run prints it: it must be plain JSON

    on_demand = training_job.build_create_training_job_request(_spec(spot=False), [])
    assert on_demand["EnableManagedSpotTraining"] is False
    assert "MaxWaitTimeInSeconds" not in on_demand["StoppingCondition"]
    assert "TensorBoardOutputConfig" not in on_demand and "Tags" not in on_demand


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"job_name": "bad_name!"}, "job name"),
        ({"role_arn": "SageMakerRole"}, "is not an IAM role ARN"),
        ({"training_s3_uri": "my-bucket/channel"}, "training_s3_uri"),
        ({"instance_type": "g4dn.xlarge"}, "must start with ml."),
        ({"max_runtime_s": 3600, "max_wait_s": 1800}, "max_wait (1800s) must be at least"),
    ],
)
def test_invalid_spec_is_rejected_before_sending(overrides, fragment):
    with pytest.raises(LaunchError, match=re.escape(fragment)):
        training_job.build_create_training_job_request(_spec(**overrides), [])


def test_hyperparameters_become_strings_the_container_reads():
    assert training_job.stringify_hyperparameters(
        {"num_steps": 10, "quantize": True, "learning_rate": 0.01, "model": "x"}
    ) == {"num_steps": "10", "quantize": "true", "learning_rate": "0.01", "model": "x"}


def test_request_builder_stringifies_hyperparameters_and_tags_itself():
    spec = _spec(
        hyperparameters={"n": 5, "quantize": True, "learning_rate": 0.01, "model": "x"},
        tags={"year": 2026, "shared": False},
    )
    training_job.validate_spec(spec)  # non-string values are not a crash here either
    request = training_job.build_create_training_job_request(spec, [])
    assert request["HyperParameters"] == {
        "n": "5",
        "quantize": "true",
        "learning_rate": "0.01",
        "model": "x",
    }
    assert request["Tags"] == [
        {"Key": "year", "Value": "2026"},
        {"Key": "shared", "Value": "false"},
    ]
    long_value = _spec(hyperparameters={"x": 10**2600})
    with pytest.raises(LaunchError, match="hyperparameter 'x' is too long"):
        training_job.build_create_training_job_request(long_value, [])


def test_spec_derives_locations_from_the_prefix(tmp_path):
    args = build_parser().parse_args(
        ["train", "--role", ROLE, "--image", IMAGE, "--s3-prefix", "s3://my-bucket/run/"]
    )
    spec = training_spec(args, {}, datetime(2026, 11, 21, 11, 30, 5))
    assert spec.job_name == "tf-od-20261121-113005"
    assert spec.training_s3_uri == "s3://my-bucket/run/channel"
    assert spec.output_s3_uri == "s3://my-bucket/run/output"
    assert spec.checkpoint_s3_uri == "s3://my-bucket/run/checkpoints/tf-od-20261121-113005"
    assert spec.tensorboard_s3_uri == "s3://my-bucket/run/tensorboard/tf-od-20261121-113005"
    assert spec.spot is True


def test_metric_regexes_read_the_containers_metric_lines():
    """Lines from the container's own formatter (real training lines: test_launch_local)."""
    train_line = format_metric_line(
        1200,
        {"total_loss": 0.4123, "cls_loss": 0.3, "box_loss": 0.0123, "learning_rate": 0.0081,
         "steps_per_sec": 3.1},
    )  # fmt: skip
    eval_line = format_metric_line(
        2000, {"AP": 0.5123, "AP50": 0.8012, "AP75": 0.5544, "APs": 0.1, "APm": 0.2,
               "APl": 0.6, "ARmax100": 0.7}
    )  # fmt: skip
    found = sagemaker_metrics(
        [f"2026-11-21 INFO container: {train_line}", eval_line], METRIC_DEFINITIONS
    )
    assert found["train:step"] == [1200.0]
    assert found["train:total_loss"] == [0.4123]
    assert found["train:learning_rate"] == [0.0081]
    assert found["eval:AP"] == [0.5123]
    assert found["eval:AP50"] == [0.8012]
    assert found["eval:AP75"] == [0.5544]
    # SageMaker limits: 40 definitions, names up to 255, regexes up to 500 characters.
    assert len(METRIC_DEFINITIONS) <= 40
    assert all(len(d["Regex"]) <= 500 and len(d["Name"]) <= 255 for d in METRIC_DEFINITIONS)


# ---- S3 sync logic ----------------------------------------------------------------------


def test_parse_s3_uri():
    assert s3_uri.parse_s3_uri("s3://my-bucket/a/b/") == ("my-bucket", "a/b")
    assert s3_uri.parse_s3_uri("s3://my-bucket") == ("my-bucket", "")
    with pytest.raises(LaunchError, match="not an S3 URI"):
        s3_uri.parse_s3_uri("https://my-bucket/a")
    assert not s3_uri.is_s3_uri("s3://My_Bucket/a")
    assert s3_uri.join_s3("s3://b-1/p/", "/checkpoints/", "job") == "s3://b-1/p/checkpoints/job"


def test_split_parts_covers_the_file_exactly():
    mib = s3_sync.MIB
    assert s3_sync.split_parts(5 * mib, 5 * mib) == [s3_sync.Part(1, 0, 5 * mib)]
    parts = s3_sync.split_parts(11 * mib + 3, 5 * mib)
    assert [p.number for p in parts] == [1, 2, 3]
    assert [p.length for p in parts] == [5 * mib, 5 * mib, mib + 3]
    assert parts[-1].offset + parts[-1].length == 11 * mib + 3


def test_local_etag_is_s3s_definition(tmp_path):
    small = tmp_path / "small"
    small.write_bytes(b"abc")
    assert (
        s3_sync.local_etag(small, 3, s3_sync.DEFAULT_PART_SIZE) == hashlib.md5(b"abc").hexdigest()
    )
    data = bytes(range(256)) * (30 * 1024)  # 7.5 MiB
    big = tmp_path / "big"
    big.write_bytes(data)
    part = 5 * s3_sync.MIB
    expected = hashlib.md5(
        hashlib.md5(data[:part]).digest() + hashlib.md5(data[part:]).digest()
    ).hexdigest()
    assert s3_sync.local_etag(big, len(data), part) == f"{expected}-2"


def test_unchanged_needs_same_size_and_checksum(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"hello")
    item = s3_sync.LocalFile(path, "k", 5)
    calls = []

    def etag_of(local_file, part_size):
        calls.append((local_file.key, part_size))
        return hashlib.md5(b"hello").hexdigest()

    same = s3_sync.RemoteObject(5, f'"{hashlib.md5(b"hello").hexdigest()}"')
    assert s3_sync.is_unchanged(item, same, etag_of)
    assert calls == [("k", None)]  # a plain MD5 ETag: compared with the whole file's MD5
    assert not s3_sync.is_unchanged(item, s3_sync.RemoteObject(5, '"0000"'), etag_of)
    calls.clear()
    assert not s3_sync.is_unchanged(item, s3_sync.RemoteObject(6, same.etag), etag_of)
    assert not s3_sync.is_unchanged(item, None, etag_of)
    assert calls == []  # no checksum work when the size already differs


def test_part_size_respects_s3_limits():
    mib, gib = s3_sync.MIB, s3_sync.GIB
    assert s3_sync.part_size_for(11 * mib, 8 * mib) == 8 * mib
    # 100 GiB in 8 MiB parts would be 12,800 parts: parts grow to whole MiB within 10,000.
    size = 100 * gib
    part = s3_sync.part_size_for(size, 8 * mib)
    assert part == 11 * mib
    assert s3_sync.part_count(size, part) <= s3_sync.MAX_PARTS
    largest = s3_sync.MAX_OBJECT_SIZE
    assert s3_sync.part_count(largest, s3_sync.part_size_for(largest, 5 * mib)) <= 10_000
    assert s3_sync.part_size_for(size, 5 * gib) == 5 * gib
    for requested in (4 * mib, 5 * gib + mib):
        with pytest.raises(LaunchError, match=r"--part-size-mb .* use 5 to 5120 MiB"):
            s3_sync.part_size_for(mib, requested)
    with pytest.raises(LaunchError, match="5 TiB"):
        s3_sync.part_size_for(largest + 1, 8 * mib)


def test_etag_part_sizes_follow_the_remote_part_count():
    mib = s3_sync.MIB
    md5 = "0" * 32
    assert s3_sync.etag_part_sizes(12 * mib, md5, 8 * mib) == [None]
    # Uploaded in 3 parts: 8 MiB gives 2, so it is not tried; 5 MiB and 4 MiB give 3.
    assert s3_sync.etag_part_sizes(12 * mib, f'"{md5}-3"', 8 * mib) == [5 * mib, 4 * mib]
    assert s3_sync.etag_part_sizes(11 * mib, f"{md5}-2", 8 * mib)[0] == 8 * mib
    assert s3_sync.etag_part_sizes(11 * mib, "not-an-md5-etag", 8 * mib) == []  # SSE-KMS
    many = s3_sync.etag_part_sizes(3 * mib, f"{md5}-1", 8 * mib)
    assert len(many) <= s3_sync.MAX_ETAG_GUESSES
    assert all(s3_sync.part_count(3 * mib, size) == 1 for size in many)


def test_file_uploaded_with_another_part_size_is_unchanged(tmp_path):
    mib = s3_sync.MIB
    data = os.urandom(12 * mib)
    path = tmp_path / "big"
    path.write_bytes(data)
    item = s3_sync.LocalFile(path, "k", len(data))
    # What S3 shows after an upload in 5 MiB parts (3 parts), checked by an 8 MiB uploader.
    remote = s3_sync.RemoteObject(len(data), s3_sync.multipart_etag(path, len(data), 5 * mib))
    uploader = s3_sync.ChannelUploader(None, "b", "p", part_size=8 * mib, progress=False)
    assert s3_sync.is_unchanged(item, remote, uploader._etag, 8 * mib)
    changed = s3_sync.RemoteObject(len(data), s3_sync.multipart_etag(path, len(data), 4 * mib))
    path.write_bytes(data[::-1])
    assert not s3_sync.is_unchanged(item, changed, uploader._etag, 8 * mib)


def test_reusable_parts_only_when_size_and_md5_match():
    parts = [s3_sync.Part(1, 0, 10), s3_sync.Part(2, 10, 4)]
    md5s = [hashlib.md5(b"a").digest(), hashlib.md5(b"b").digest()]
    uploaded = [
        {"PartNumber": 1, "ETag": f'"{md5s[0].hex()}"', "Size": 10},
        {"PartNumber": 2, "ETag": '"ffff"', "Size": 4},
    ]
    assert s3_sync.reusable_parts(parts, md5s, uploaded) == {1: f'"{md5s[0].hex()}"'}


def test_list_local_files_keys_and_errors(tmp_path):
    (tmp_path / "c" / "sub").mkdir(parents=True)
    (tmp_path / "c" / "b.txt").write_text("b")
    (tmp_path / "c" / "sub" / "a.txt").write_text("a")
    files = s3_sync.list_local_files(tmp_path / "c", "pre/fix")
    assert [f.key for f in files] == ["pre/fix/b.txt", "pre/fix/sub/a.txt"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(LaunchError, match="empty"):
        s3_sync.list_local_files(tmp_path / "empty", "p")
    with pytest.raises(LaunchError, match="not a folder"):
        s3_sync.list_local_files(tmp_path / "nope", "p")


# ---- errors -----------------------------------------------------------------------------


def _client_error(code: str, message: str, status: int, **extra) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message, **extra},
         "ResponseMetadata": {"HTTPStatusCode": status}},
        "CreateTrainingJob",
    )  # fmt: skip


def test_boto3_transfer_errors_become_one_line():
    upload_failed = S3UploadFailedError(
        "Failed to upload /tmp/x to b-1/k: An error occurred (NoSuchBucket) when calling the "
        "PutObject operation: The specified bucket does not exist"
    )
    retries = RetriesExceededError(OSError("Connection reset by peer"))
    for error, fragment in (
        (upload_failed, "S3 bucket does not exist; create it"),
        (retries, "still failed after retries (Connection reset by peer)"),
        (S3TransferFailedError("Upload failed:\n  disk full"), "Upload failed: disk full"),
    ):
        with pytest.raises(LaunchError) as raised, aws_action("moving it"):
            raise error
        message = str(raised.value)
        assert message.startswith("moving it failed:") and fragment in message, message
        assert "\n" not in message


@pytest.mark.parametrize(
    ("error", "fragment"),
    [
        (_client_error("NoSuchBucket", "x", 404, BucketName="b-1"), "bucket 'b-1' does not exist"),
        (_client_error("AccessDeniedException", "not authorized", 400), "access denied"),
        (_client_error("ResourceLimitExceeded", "limit 0", 400), "quota exceeded"),
        (
            _client_error(
                "ValidationException", "Could not assume role arn:aws:iam::1:role/x", 400
            ),
            "cannot use the execution role",
        ),
        (_client_error("ExpiredToken", "expired", 400), "session expired"),
        # S3 answers bad keys and bad signatures with HTTP 403: still a credentials problem.
        (_client_error("InvalidAccessKeyId", "no such key id", 403), "rejected the credentials"),
        (_client_error("SignatureDoesNotMatch", "bad secret", 403), "rejected the credentials"),
        (_client_error("ExpiredToken", "expired", 403), "session expired"),
        (_client_error("AccessDenied", "Access Denied", 403), "access denied"),
        (_client_error("500", "<html><h1>Internal Server Error</h1>\n</html>", 500), "HTTP 500"),
        (NoCredentialsError(), "no usable AWS credentials"),
        (NoRegionError(), "no AWS region"),
    ],
)
def test_aws_errors_map_to_one_line(error, fragment):
    message = describe_aws_exception(error, "doing it")
    assert message.startswith("doing it failed:")
    assert fragment in message
    assert "\n" not in message and "<" not in message


# ---- ECR, status, local tree --------------------------------------------------------------


def test_parse_authorization_and_push_commands():
    import base64

    login = parse_authorization(
        {
            "authorizationToken": base64.b64encode(b"AWS:secret-token").decode(),
            "proxyEndpoint": "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com",
        }
    )
    assert (login.username, login.password) == ("AWS", "secret-token")
    assert "secret-token" not in repr(login)
    commands = push_commands("docker", login, "tf-od:dev", "r/tf-od:1")
    assert commands[0] == [
        "docker", "login", "--username", "AWS", "--password-stdin",
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
    ]  # fmt: skip
    assert all("secret-token" not in part for command in commands for part in command)


def test_job_summary_and_status_line():
    description = {
        "TrainingJobName": "j",
        "TrainingJobStatus": "InProgress",
        "SecondaryStatus": "Training",
        "SecondaryStatusTransitions": [{"Status": "Training", "StatusMessage": "in progress"}],
        "FinalMetricDataList": [{"MetricName": "eval:AP", "Value": 0.5}],
        "CheckpointConfig": {"S3Uri": "s3://b/c"},
    }
    summary = job_summary(description)
    assert summary["FinalMetrics"] == {"eval:AP": 0.5}
    assert summary["CheckpointS3Uri"] == "s3://b/c"
    assert status_line(description) == "InProgress - Training: in progress"


def test_a_job_that_did_not_complete_is_an_error_line():
    check_job_outcome({"TrainingJobName": "j", "TrainingJobStatus": "Completed"})
    with pytest.raises(JobEndedError) as failed:
        check_job_outcome(
            {"TrainingJobName": "j", "TrainingJobStatus": "Failed", "FailureReason": "OOM\n  x"}
        )
    assert str(failed.value) == "job j failed: OOM x"
    stopped = {
        "TrainingJobName": "j",
        "TrainingJobStatus": "Stopped",
        "SecondaryStatus": "MaxRuntimeExceeded",
        "CheckpointConfig": {"S3Uri": "s3://b/checkpoints/j"},
    }
    with pytest.raises(JobEndedError) as ended:
        check_job_outcome(stopped)
    assert str(ended.value) == (
        "job j was stopped (Stopped - MaxRuntimeExceeded) before completing; "
        "continue it with train --checkpoint-s3-uri s3://b/checkpoints/j"
    )
    assert ended.value.exit_code == 1 and LaunchError("x").exit_code == 2


def test_local_tree_is_what_sagemaker_builds(tmp_path):
    channel = tmp_path / "channel"
    channel.mkdir()
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    tree = local.plan_local_tree({"num_steps": "5", "quantize": "true"}, channel, checkpoint)
    assert json.loads(tree.files["input/config/hyperparameters.json"]) == {
        "num_steps": "5",
        "quantize": "true",
    }
    assert set(json.loads(tree.files["input/config/inputdataconfig.json"])) == {
        "training",
        "checkpoint",
    }
    resource = json.loads(tree.files["input/config/resourceconfig.json"])
    assert resource["current_host"] in resource["hosts"]
    assert tree.links == {
        "input/data/training": channel.resolve(),
        "input/data/checkpoint": checkpoint.resolve(),
    }

    # Written, the container's own reader sees the same values and channels.
    base = tmp_path / "opt_ml"
    env = local.write_local_tree(base, tree)
    assert env.read_hyperparameters() == {"num_steps": "5", "quantize": "true"}
    assert env.training_dir.resolve() == channel.resolve()
    # Rewritten without the checkpoint channel: the stale link goes, a copy replaces the link.
    (channel / "label_map.pbtxt").write_text("x")
    env = local.write_local_tree(base, local.plan_local_tree({}, channel), copy_channels=True)
    assert not env.checkpoint_channel_dir.exists()
    assert not env.training_dir.is_symlink()
    assert (env.training_dir / "label_map.pbtxt").read_text() == "x"
    with pytest.raises(LaunchError, match="pass --copy-channels"):
        local.write_local_tree(base, local.plan_local_tree({}, channel))


def test_local_dry_run_uses_train_hyperparameter_sources(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "launch.toml").write_text("[hyperparameters]\nnum_steps = 7\nquantize = true\n")
    (tmp_path / "channel").mkdir()
    assert main(["local", "channel", "--hp", "num_steps=9", "--dry-run"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads(printed["files"]["input/config/hyperparameters.json"]) == {
        "num_steps": "9",
        "quantize": "true",
    }


def _tar_with(path: Path, members: list[tarfile.TarInfo]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            data = b"x" * member.size if member.isfile() else None
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    info.size = 1 if kind == tarfile.REGTYPE else 0
    return info


def test_unsafe_archive_members():
    assert artifacts.unsafe_member(_member("../evil"))
    assert artifacts.unsafe_member(_member("saved_model/../../evil"))
    assert artifacts.unsafe_member(_member("/etc/evil"))
    assert artifacts.unsafe_member(_member("link", tarfile.SYMTYPE, "/etc/passwd"))
    assert artifacts.unsafe_member(_member("dev", tarfile.CHRTYPE))
    assert not artifacts.unsafe_member(_member("saved_model/variables/x.index"))
    assert not artifacts.unsafe_member(_member("saved_model", tarfile.DIRTYPE))


@pytest.mark.parametrize("data_filter", [True, False], ids=["data-filter", "manual-check"])
def test_unpack_refuses_a_member_leaving_the_folder(tmp_path, monkeypatch, data_filter):
    if not data_filter:  # what a Python without tarfile.data_filter (< 3.11.4) runs
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    archive = _tar_with(tmp_path / "model.tar.gz", [_member("labels.txt"), _member("../evil")])
    destination = tmp_path / "out" / "model"
    with pytest.raises(LaunchError) as error:
        artifacts.unpack_model(archive, destination)
    assert str(error.value) == "model.tar.gz has unsafe member ../evil; refused"
    assert not (tmp_path / "out" / "evil").exists() and not (tmp_path / "evil").exists()
    assert not destination.exists()
    assert list((tmp_path / "out").iterdir()) == []  # no staging folder left behind

    good = _tar_with(tmp_path / "good.tar.gz", [_member("labels.txt"), _member("saved_model/a")])
    assert sorted(artifacts.unpack_model(good, destination)) == ["labels.txt", "saved_model/a"]
    assert (destination / "saved_model" / "a").read_bytes() == b"x"


def test_unpack_into_an_existing_file_is_refused(tmp_path):
    archive = _tar_with(tmp_path / "model.tar.gz", [_member("labels.txt")])
    target = tmp_path / "model"
    target.write_text("keep me")
    with pytest.raises(LaunchError, match="is a file, not a folder"):
        artifacts.unpack_model(archive, target, force=True)
    assert target.read_text() == "keep me"


def test_local_writes_the_hyperparameters_train_would_send(tmp_path, capsys, clean_settings):
    (tmp_path / "launch.toml").write_text(
        "[hyperparameters]\nnum_steps = 7\nrandom_flip = false\nlearning_rate = 0.01\n"
    )
    (tmp_path / "channel").mkdir()
    common = ["--hp", "batch_size=4"]
    assert main(["local", "channel", *common, "--dry-run"]) == 0
    files = json.loads(capsys.readouterr().out)["files"]
    written = json.loads(files["input/config/hyperparameters.json"])
    assert main(["train", "--role", ROLE, "--image", IMAGE, "--s3-prefix", "s3://b-1/p",
                 *common, "--dry-run"]) == 0  # fmt: skip
    sent = json.loads(capsys.readouterr().out)["HyperParameters"]
    assert (
        written
        == sent
        == {
            "num_steps": "7",
            "random_flip": "false",
            "learning_rate": "0.01",
            "batch_size": "4",
        }
    )
    # What train would refuse, local refuses too, with the same message.
    too_long = ["--hp", "model=" + "x" * 2501]
    assert main(["local", "channel", *too_long, "--dry-run"]) == 2
    assert "hyperparameter 'model' is too long" in capsys.readouterr().err


def test_credential_templates_hold_no_real_looking_secrets():
    folder = ROOT / "aws_credentials"
    assert {p.name for p in folder.iterdir()} >= {
        "config.example",
        "credentials.example",
        "README.md",
    }
    for path in folder.iterdir():
        if path.suffix == ".example" or path.name == "README.md":
            text = path.read_text()
            assert not re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text), path
            assert not re.search(r"\b[A-Za-z0-9/+]{40}\b", text), path
