"""The pure parts of launch: settings, the job request, S3 sync logic, errors, the local tree."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError

from container.metrics import METRIC_DEFINITIONS, format_metric_line
from container.sagemaker_env import SageMakerEnv
from launch import local, s3_sync, settings, training_job
from launch.__main__ import build_parser, job_summary, main, training_spec
from launch.ecr import parse_authorization, push_commands
from launch.errors import LaunchError, describe_aws_exception
from launch.logs import status_line

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
    found = extract_metrics([f"2026-11-21 INFO container: {train_line}", eval_line])
    assert found["train:step"] == [1200.0]
    assert found["train:total_loss"] == [0.4123]
    assert found["train:learning_rate"] == [0.0081]
    assert found["eval:AP"] == [0.5123]
    assert found["eval:AP50"] == [0.8012]
    assert found["eval:AP75"] == [0.5544]
    # SageMaker limits: 40 definitions, names up to 255, regexes up to 500 characters.
    assert len(METRIC_DEFINITIONS) <= 40
    assert all(len(d["Regex"]) <= 500 and len(d["Name"]) <= 255 for d in METRIC_DEFINITIONS)


def extract_metrics(lines: list[str]) -> dict[str, list[float]]:
    """What SageMaker does with MetricDefinitions: the first group of each match, per line."""
    found: dict[str, list[float]] = {}
    for definition in METRIC_DEFINITIONS:
        regex = re.compile(definition["Regex"])
        for line in lines:
            match = regex.search(line)
            if match:
                found.setdefault(definition["Name"], []).append(float(match.group(1)))
    return found


# ---- S3 sync logic ----------------------------------------------------------------------


def test_parse_s3_uri():
    assert s3_sync.parse_s3_uri("s3://my-bucket/a/b/") == ("my-bucket", "a/b")
    assert s3_sync.parse_s3_uri("s3://my-bucket") == ("my-bucket", "")
    with pytest.raises(LaunchError, match="not an S3 URI"):
        s3_sync.parse_s3_uri("https://my-bucket/a")


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

    def etag_of(local_file):
        calls.append(local_file.key)
        return hashlib.md5(b"hello").hexdigest()

    same = s3_sync.RemoteObject(5, f'"{hashlib.md5(b"hello").hexdigest()}"')
    assert s3_sync.is_unchanged(item, same, etag_of)
    assert not s3_sync.is_unchanged(item, s3_sync.RemoteObject(5, '"0000"'), etag_of)
    calls.clear()
    assert not s3_sync.is_unchanged(item, s3_sync.RemoteObject(6, same.etag), etag_of)
    assert not s3_sync.is_unchanged(item, None, etag_of)
    assert calls == []  # no checksum work when the size already differs


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
