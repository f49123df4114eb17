"""`launch deploy|endpoint|transform` against a real moto server on loopback (HTTP, no patches).

What reached the server is read back from moto's request recorder. moto creates endpoints
InService and transform jobs Completed at once, so the waits are exercised on their happy path
there; an endpoint that fails, and an endpoint name already taken, come from a loopback server
answering with SageMaker's own JSON bodies.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from test_launch_aws import IMAGE, REGION, ROLE, Recorder, _client, _run_cli, aws, moto_endpoint

__all__ = ["aws", "moto_endpoint"]  # fixtures, imported for this module's tests

MODEL_DATA = "s3://serving-bucket/output/tf-od-serve-1/output/model.tar.gz"


def _training_job(endpoint: str, name: str) -> str:
    """A completed training job in moto (its artifact is OUTPUT/NAME/output/model.tar.gz)."""
    _client("sagemaker", endpoint).create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        RoleArn=ROLE,
        OutputDataConfig={"S3OutputPath": "s3://serving-bucket/output"},
        ResourceConfig={"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 10},
        StoppingCondition={"MaxRuntimeInSeconds": 3600},
    )
    return name


def test_deploy_dry_run_prints_every_request_and_sends_none(aws, capsys):
    with Recorder(aws) as recorder:
        code, out, err = _run_cli(
            [
                "deploy",
                MODEL_DATA,
                "--role",
                ROLE,
                "--image",
                IMAGE,
                "--endpoint-name",
                "raccoon",
                "--autoscale",
                "1-3",
                "--serve-export",
                "tflite",
                "--dry-run",
            ],
            capsys,
        )
    assert code == 0, err
    plan = json.loads(out)
    assert list(plan) == [
        "CreateModel",
        "CreateEndpointConfig",
        "CreateEndpoint",
        "RegisterScalableTarget",
        "PutScalingPolicy",
    ]
    assert plan["CreateModel"]["PrimaryContainer"] == {
        "Image": IMAGE,
        "ModelDataUrl": MODEL_DATA,
        "Environment": {"TFOD_SERVE_EXPORT": "tflite"},
    }
    assert plan["CreateEndpoint"]["EndpointName"] == "raccoon"
    assert plan["CreateEndpoint"]["EndpointConfigName"].startswith("raccoon-")
    assert plan["RegisterScalableTarget"]["ResourceId"] == "endpoint/raccoon/variant/AllTraffic"
    assert recorder.requests() == []


def test_deploy_a_training_job_waits_and_registers_autoscaling(aws, capsys):
    job = _training_job(aws, "tf-od-serve-1")
    with Recorder(aws) as recorder:
        code, out, err = _run_cli(
            ["deploy", job, "--autoscale", "1-4", "--poll-seconds", "0.01"], capsys
        )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"[{job}] InService"
    result = json.loads(lines[-1])
    assert result["EndpointName"] == job and result["EndpointStatus"] == "InService"
    assert result["ScalingPolicyARN"]

    (model,) = recorder.targets("SageMaker.CreateModel")
    assert model["PrimaryContainer"]["Image"] == IMAGE  # the training image serves too
    assert model["PrimaryContainer"]["ModelDataUrl"] == (
        f"s3://serving-bucket/output/{job}/output/model.tar.gz"
    )
    assert model["ExecutionRoleArn"] == ROLE
    (config,) = recorder.targets("SageMaker.CreateEndpointConfig")
    assert config["ProductionVariants"] == [
        {
            "VariantName": "AllTraffic",
            "ModelName": model["ModelName"],
            "InstanceType": "ml.c5.xlarge",
            "InitialInstanceCount": 1,
            "InitialVariantWeight": 1.0,
        }
    ]
    (register,) = recorder.targets("AnyScaleFrontendService.RegisterScalableTarget")
    assert (register["MinCapacity"], register["MaxCapacity"]) == (1, 4)
    (policy,) = recorder.targets("AnyScaleFrontendService.PutScalingPolicy")
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == (
        "SageMakerVariantInvocationsPerInstance"
    )
    targets = _client("application-autoscaling", aws).describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=[f"endpoint/{job}/variant/AllTraffic"]
    )["ScalableTargets"]
    assert len(targets) == 1

    # endpoint list shows it; endpoint delete removes endpoint, config, model and scaling.
    code, out, err = _run_cli(["endpoint", "list"], capsys)
    assert code == 0, err
    assert {"EndpointName": job, "EndpointStatus": "InService"}.items() <= next(
        row for row in json.loads(out) if row["EndpointName"] == job
    ).items()
    with Recorder(aws) as recorder:
        code, out, err = _run_cli(["endpoint", "delete", job], capsys)
    assert code == 0, err
    deleted = json.loads(out)
    assert deleted["Models"] == [model["ModelName"]]
    assert deleted["Deregistered"] == [f"endpoint/{job}/variant/AllTraffic"]
    operations = [
        entry["headers"]["X-Amz-Target"].split(".")[-1]
        for entry in recorder.requests()
        if "X-Amz-Target" in entry["headers"]
    ]
    assert operations == [
        "DescribeEndpoint",
        "DescribeEndpointConfig",
        "DescribeScalableTargets",
        "DeregisterScalableTarget",
        "DeleteEndpoint",
        "DeleteEndpointConfig",
        "DeleteModel",
    ]
    sagemaker = _client("sagemaker", aws)
    assert job not in [e["EndpointName"] for e in sagemaker.list_endpoints()["Endpoints"]]
    with pytest.raises(sagemaker.exceptions.ClientError):
        sagemaker.describe_model(ModelName=model["ModelName"])
    assert not _client("application-autoscaling", aws).describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=[f"endpoint/{job}/variant/AllTraffic"]
    )["ScalableTargets"]


def test_deploy_a_serverless_endpoint_from_an_s3_archive(aws, capsys, monkeypatch):
    monkeypatch.setenv("LAUNCH_ROLE", ROLE)
    monkeypatch.setenv("LAUNCH_IMAGE", IMAGE)
    with Recorder(aws) as recorder:
        code, out, err = _run_cli(
            ["deploy", MODEL_DATA, "--serverless-memory-mb", "3072", "--poll-seconds", "0"],
            capsys,
        )
    assert code == 0, err
    name = json.loads(out.splitlines()[-1])["EndpointName"]
    assert name.startswith("tf-od-endpoint-")
    (config,) = recorder.targets("SageMaker.CreateEndpointConfig")
    (variant,) = config["ProductionVariants"]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 3072, "MaxConcurrency": 5}
    assert "InstanceType" not in variant


def test_deploy_refusals_are_one_line(aws, capsys):
    code, out, err = _run_cli(["deploy", MODEL_DATA, "--dry-run"], capsys)
    assert code == 2 and out == ""
    assert "missing setting 'role'" in err and "missing setting 'image'" in err
    code, _, err = _run_cli(["deploy", "no-such-job"], capsys)
    assert code == 2 and err.count("\n") == 1 and "no-such-job" in err
    job = _training_job(aws, "tf-od-serve-2")
    code, _, err = _run_cli(
        ["deploy", job, "--serverless-memory-mb", "2048", "--autoscale", "1-2"], capsys
    )
    assert code == 2 and "serverless endpoint scales by itself" in err


def test_transform_over_an_image_folder_waits_for_the_job(aws, capsys):
    job = _training_job(aws, "tf-od-serve-3")
    with Recorder(aws) as recorder:
        code, out, err = _run_cli(
            [
                "transform",
                job,
                "s3://serving-bucket/images/",
                "s3://serving-bucket/detections/",
                "--transform-instance-type",
                "ml.m5.large",
                "--wait",
                "--poll-seconds",
                "0",
            ],
            capsys,
        )
    assert code == 0, err
    lines = out.splitlines()
    result = json.loads(lines[-1])
    assert lines[0] == f"[{result['TransformJobName']}] Completed"
    assert result["TransformJobStatus"] == "Completed"
    (sent,) = recorder.targets("SageMaker.CreateTransformJob")
    assert sent["TransformInput"] == {
        "DataSource": {
            "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://serving-bucket/images/"}
        },
        "ContentType": "application/x-image",
        "SplitType": "None",
        "CompressionType": "None",
    }
    assert sent["TransformResources"] == {"InstanceType": "ml.m5.large", "InstanceCount": 1}
    assert "MaxConcurrentTransforms" not in sent  # the container's /execution-parameters says
    (model,) = recorder.targets("SageMaker.CreateModel")
    assert sent["ModelName"] == model["ModelName"]


class _SageMakerStandIn(BaseHTTPRequestHandler):
    """SageMaker's JSON API on loopback for what moto does not do: an endpoint that ends Failed,
    and CreateEndpoint refused (the name is taken). Records the operations it was sent."""

    calls: list

    def do_POST(self) -> None:
        operation = self.headers.get("X-Amz-Target", "").split(".")[-1]
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self.calls.append(operation)
        status, body = 200, {}
        if operation == "CreateModel":
            body = {"ModelArn": "arn:aws:sagemaker:us-east-1:123456789012:model/m"}
        elif operation == "CreateEndpointConfig":
            body = {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:123456789012:ec/c"}
        elif operation == "CreateEndpoint" and request["EndpointName"] == "taken":
            status = 400
            body = {
                "__type": "ValidationException",
                "Message": 'Cannot create already existing endpoint "arn:aws:sagemaker:'
                'us-east-1:123456789012:endpoint/taken".',
            }
        elif operation == "CreateEndpoint":
            body = {"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/broken"}
        elif operation == "DescribeEndpoint":
            failed = len([c for c in self.calls if c == "DescribeEndpoint"]) > 1
            body = {
                "EndpointName": request["EndpointName"],
                "EndpointStatus": "Failed" if failed else "Creating",
                "EndpointConfigName": "c",
            }
            if failed:
                body["FailureReason"] = (
                    "The primary container for production variant AllTraffic did not pass the "
                    "ping health check. Please check CloudWatch logs for this endpoint."
                )
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stand_in(monkeypatch, tmp_path):
    handler = type("Handler", (_SageMakerStandIn,), {"calls": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    yield handler
    server.shutdown()
    server.server_close()


def _deploy_args(name: str) -> list[str]:
    return [
        "deploy",
        MODEL_DATA,
        "--role",
        ROLE,
        "--image",
        IMAGE,
        "--endpoint-name",
        name,
        "--poll-seconds",
        "0",
    ]


def test_an_endpoint_that_fails_exits_1_with_the_reason(stand_in, capsys):
    code, out, err = _run_cli(_deploy_args("broken"), capsys)
    assert code == 1
    assert out.splitlines()[0] == "[broken] Creating"
    assert err.count("\n") == 1
    assert "endpoint broken is Failed: The primary container" in err
    assert "endpoint delete broken" in err


def test_a_taken_endpoint_name_is_one_line_and_cleans_up(stand_in, capsys):
    code, out, err = _run_cli(_deploy_args("taken"), capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "already existing endpoint" in err
    # The model and config made for it are deleted again.
    assert stand_in.calls == [
        "CreateModel",
        "CreateEndpointConfig",
        "CreateEndpoint",
        "DeleteEndpointConfig",
        "DeleteModel",
    ]


def test_deleting_a_missing_endpoint_is_one_line(aws, capsys):
    code, out, err = _run_cli(["endpoint", "delete", "no-such-endpoint"], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "no-such-endpoint" in err, err
    assert "check the name and --region" in err
