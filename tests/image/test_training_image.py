"""The training image, built from this checkout's Dockerfile and run the way SageMaker runs it.

Each test is one check of the issue's list: `IMAGE train` (with every export), the image with no
argument (SDK local mode), a stop mid-training (`podman stop`: SIGTERM to PID 1, 120 s grace)
and a restart on the same checkpoints, a bad hyperparameter, and what the image's file system
holds. The runs are module fixtures, so each container runs once.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import time

import image_engine
import pytest
from conftest import TINY_HYPERPARAMETERS, make_opt_ml, report_lines

from sagemaker_tfod.container.metrics import METRIC_DEFINITIONS, parse_metric_line
from sagemaker_tfod.launch.image_requirements import read_excludes, required_name

REPO = image_engine.REPO
STOP_GRACE_SECONDS = 120  # what SageMaker gives between SIGTERM and SIGKILL


def metric_steps(log: str) -> list[int]:
    steps = []
    for line in log.splitlines():
        parsed = parse_metric_line(line)
        if parsed and "total_loss" in parsed[1]:
            steps.append(parsed[0])
    return steps


def assert_metric_lines_sagemaker_reads(log: str) -> None:
    """SageMaker's own view: every train regex of the job's MetricDefinitions finds a value."""
    for definition in METRIC_DEFINITIONS:
        if definition["Name"].startswith("train:"):
            assert re.search(definition["Regex"], log), definition


def assert_saved_model(model_dir: pathlib.Path) -> None:
    assert (model_dir / "saved_model" / "saved_model.pb").is_file()
    assert any((model_dir / "saved_model" / "variables").glob("variables.data-*"))
    for name in ("label_map.pbtxt", "labels.txt", "pipeline.yaml", "metrics.json", "eval.png"):
        assert (model_dir / name).is_file(), name


# ---- IMAGE train, with every export ---------------------------------------------------------


def test_train_writes_a_complete_model_and_metric_lines(train_run):
    opt_ml, run = train_run
    assert run.returncode == 0, run.log[-4000:]
    model = opt_ml / "model"
    assert_saved_model(model)
    # The exports that need the packages the image keeps (TFLite converter, the Pi's runtime,
    # pycocotools for their AP): every file, with its measured AP in export.json.
    for name in ("frozen_inference_graph.pb", "model.tflite", "model_int8.tflite"):
        assert (model / name).stat().st_size > 10_000, name
    exports = json.loads((model / "export.json").read_text())
    assert {"model.tflite", "model_int8.tflite"} <= set(json.dumps(exports).split('"'))
    assert metric_steps(run.log) == [3, 6]
    assert_metric_lines_sagemaker_reads(run.log)
    assert not (opt_ml / "output" / "failure").exists()


# ---- the image with no argument (SDK local mode) ------------------------------------------


@pytest.fixture(scope="module")
def stopped_run(image, tmp_path_factory, synthetic_channel):
    """`IMAGE train` towards 400 steps, stopped with `podman stop` after its first metric line."""
    opt_ml = make_opt_ml(
        tmp_path_factory.mktemp("stop") / "opt_ml",
        synthetic_channel,
        {**TINY_HYPERPARAMETERS, "num_steps": "400", "log_interval_steps": "2"},
    )
    name = f"tfod-stop-{os.getpid()}"
    notes = {}
    with image_engine.started_container(image, opt_ml, ["train"], name=name) as process:
        lines = []
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if parse_metric_line(line):
                # PID 1 of the container is the training process itself (exec-form ENTRYPOINT),
                # so the SIGTERM of `podman stop` reaches Python, not a shell.
                pid1 = image.podman.run("exec", name, "cat", "/proc/1/cmdline", check=False)
                notes["pid1"] = pid1.stdout.replace("\0", " ").strip()
                started = time.monotonic()
                stop = image.podman.run(
                    "stop", "--time", str(STOP_GRACE_SECONDS), name,
                    timeout=STOP_GRACE_SECONDS + 60, check=False,
                )  # fmt: skip
                notes["stop_seconds"] = f"{time.monotonic() - started:.1f}"
                notes["stop_output"] = (stop.stdout + stop.stderr).strip()
                break
        rest, _ = process.communicate(timeout=STOP_GRACE_SECONDS + 60)
        lines.append(rest)
    return opt_ml, image_engine.ContainerRun(process.returncode, "".join(lines), notes)


def test_stop_is_sigterm_to_pid1_which_checkpoints_exports_and_exits_0(stopped_run):
    opt_ml, run = stopped_run
    checkpoints = sorted(p.name for p in (opt_ml / "checkpoints").glob("ckpt-*.index"))
    model = (
        sorted(p.name for p in (opt_ml / "model").iterdir()) if (opt_ml / "model").exists() else []
    )
    report_lines.append(
        f"stop: exit code {run.returncode}; PID 1 {run.notes.get('pid1')!r}; podman stop took "
        f"{run.notes.get('stop_seconds')} s of {STOP_GRACE_SECONDS}; metric steps "
        f"{metric_steps(run.log)}; checkpoints {checkpoints}; model/ {model}"
    )
    assert run.notes.get("pid1", "").startswith("python3 -m sagemaker_tfod.container train")
    # Exit 137 = SIGKILL: the checkpoint and export after SIGTERM outlasted SageMaker's grace.
    assert run.returncode == 0, f"{run.notes}\n{run.log[-3000:]}"
    assert float(run.notes["stop_seconds"]) < STOP_GRACE_SECONDS, run.notes
    assert "SIGTERM received" in run.log
    metrics = json.loads((opt_ml / "model" / "metrics.json").read_text())
    assert metrics["stopped_early"] is True
    stopped_at = metrics["step"]
    assert 2 <= stopped_at < 400
    assert (opt_ml / "checkpoints" / f"ckpt-{stopped_at}.index").is_file()
    assert_saved_model(opt_ml / "model")
    assert not (opt_ml / "output" / "failure").exists()


@pytest.fixture(scope="module")
def resumed_run(image, stopped_run, tmp_path_factory, synthetic_channel):
    """A new container with no argument (as SDK local mode runs it) on a fresh /opt/ml whose
    checkpoints/ is the stopped container's, as SageMaker restores it after a spot stop."""
    stopped_opt_ml, _ = stopped_run
    checkpoints = stopped_opt_ml / "checkpoints"
    steps = [int(p.name[5:-6]) for p in checkpoints.glob("ckpt-*.index")]
    assert steps, "the stopped container left no checkpoint"
    stopped_at = max(steps)
    target = stopped_at + 4
    opt_ml = make_opt_ml(
        tmp_path_factory.mktemp("resume") / "opt_ml",
        synthetic_channel,
        {**TINY_HYPERPARAMETERS, "num_steps": str(target), "log_interval_steps": "2"},
    )
    run = image_engine.run_image(
        image, opt_ml, [], extra=["--volume", f"{checkpoints}:/opt/ml/checkpoints"]
    )
    run.notes.update(stopped_at=str(stopped_at), target=str(target))
    return opt_ml, checkpoints, run


def test_no_argument_trains_like_train(resumed_run):
    opt_ml, _checkpoints, run = resumed_run
    assert run.returncode == 0, run.log[-4000:]
    assert_saved_model(opt_ml / "model")
    assert metric_steps(run.log), "no metric lines"
    assert_metric_lines_sagemaker_reads(run.log)


def test_restarted_container_resumes_from_the_checkpoints(resumed_run):
    opt_ml, checkpoints, run = resumed_run
    stopped_at, target = int(run.notes["stopped_at"]), int(run.notes["target"])
    resumed = f"resuming from step {stopped_at}" in run.log
    report_lines.append(
        f"resume (no argument): exit code {run.returncode}; "
        f"log says {'resuming from step ' + str(stopped_at) if resumed else 'no resume'}; "
        f"metric steps {metric_steps(run.log)}; checkpoints "
        f"{sorted(p.name for p in checkpoints.glob('ckpt-*.index'))}"
    )
    assert f"resuming from step {stopped_at}" in run.log, run.log[-4000:]
    steps = metric_steps(run.log)
    assert steps[0] == stopped_at + 2 and steps[-1] == target, steps
    assert json.loads((opt_ml / "model" / "metrics.json").read_text())["step"] == target
    assert (checkpoints / f"ckpt-{target}.index").is_file()


# ---- a bad hyperparameter ---------------------------------------------------------------------


def test_bad_hyperparameter_exits_nonzero_and_names_it_in_output_failure(image, opt_ml):
    root = opt_ml({**TINY_HYPERPARAMETERS, "num_steps": "1k"})
    run = image_engine.run_image(image, root, ["train"], timeout=300)
    assert run.returncode == 1, run.log[-3000:]
    failure = (root / "output" / "failure").read_text()
    assert "hyperparameter num_steps='1k' is not a valid int" in failure
    assert failure.count("\n") == 1  # one line, for the job's FailureReason
    assert not (root / "model" / "saved_model").exists()


# ---- what the image holds -------------------------------------------------------------------

IN_IMAGE_REPORT = """
import importlib.metadata as md, json, re, subprocess, sys
check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
print(json.dumps({
    "python": list(sys.version_info[:3]),
    "pip_check": [check.returncode, check.stdout + check.stderr],
    # md.version() reads the distribution first on sys.path: the one `import` gets (Debian's
    # own setuptools and wheel stay in /usr/lib/python3/dist-packages, behind the lock's).
    "dists": {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): md.version(d.metadata["Name"])
              for d in md.distributions()},
    "requires": {d.metadata["Name"]: [r for r in d.requires or [] if "extra ==" not in r]
                 for d in md.distributions()},
}))
"""


@pytest.fixture(scope="module")
def in_image_report(image, tmp_path_factory):
    empty = tmp_path_factory.mktemp("empty_opt_ml")
    run = image_engine.run_image(
        image, empty, ["-c", IN_IMAGE_REPORT], extra=["--entrypoint", "python3"], timeout=300
    )
    assert run.returncode == 0, run.log[-3000:]
    return json.loads(run.log.strip().splitlines()[-1])


def _pins(lock: pathlib.Path) -> dict[str, str]:
    pins = {}
    for line in lock.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line)
        if match:
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return pins


def test_pip_check_passes_in_the_image(in_image_report):
    returncode, output = in_image_report["pip_check"]
    assert returncode == 0, output


def test_python_and_packages_are_the_locks(in_image_report):
    assert in_image_report["python"][:2] == [3, 11]
    installed = in_image_report["dists"]
    wanted = _pins(REPO / "requirements-image.lock")
    assert {name: installed.get(name) for name in wanted} == wanted
    assert installed["sagemaker-tf-object-detection"]


def test_only_what_official_vision_and_the_project_import(in_image_report):
    """The packages requirements-image-excludes.txt leaves out are absent, and no installed
    package requires them any more (pip check above would otherwise have named them)."""
    excluded = read_excludes((REPO / "requirements-image-excludes.txt").read_text())
    assert {"kaggle", "pyarrow", "tensorflow-text", "pandas"} <= excluded
    assert not excluded & set(in_image_report["dists"])
    still_required = {
        (name, requirement)
        for name, requirements in in_image_report["requires"].items()
        for requirement in requirements
        if required_name(f"Requires-Dist: {requirement}") in excluded
    }
    assert still_required == set()


PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
# Where a copied checkout would land: /, WORKDIR /opt/program, /tmp, root's home.
CHECKOUT_PLACES = {".", "opt/program", "tmp", "root"}


def certificates(data: bytes) -> set[bytes]:
    return {b"".join(match.group(0).split()) for match in PEM_CERTIFICATE.finditer(data)}


def test_image_holds_no_credentials_git_venv_tests_or_ca_bundle(image):
    """Nothing of the checkout but the installed package, and none of the certificates the
    build's CA bundle adds to Debian's (the proxy's): the bundle was a build secret."""
    test_files = {path.name for path in (REPO / "tests").rglob("*.py")}
    credential_files = {path.name for path in (REPO / "aws_credentials").glob("*.example")}
    bundle = image_engine.ca_bundle()
    found = []
    with image.podman.mounted(image.ref) as root:
        stock_bundle = root / "etc/ssl/certs/ca-certificates.crt"
        assert not stock_bundle.is_symlink()
        stock = stock_bundle.read_bytes()
        added = certificates(bundle.read_bytes()) - certificates(stock) if bundle else set()
        print(f"CA bundle {bundle}: {len(added)} certificate(s) beyond Debian's own")
        for folder, dirs, files in os.walk(root):
            relative = os.path.relpath(folder, root)
            installed = "-packages" in relative  # site-packages, dist-packages
            for name in dirs:
                checkout_folder = name == "tests" and relative in CHECKOUT_PLACES
                if checkout_folder or name in {".git", ".venv", "aws_credentials", ".aws"}:
                    found.append(f"{relative}/{name}/")
            for name in files:
                path = pathlib.Path(folder, name)
                if not installed and (name in test_files or name in credential_files):
                    found.append(f"{relative}/{name}")
                # Not through symlinks: an absolute link would be resolved on this host
                # (Debian's /usr/lib/ssl/cert.pem points at /etc/ssl/certs/ca-certificates.crt).
                certificate_file = (
                    not installed and name.endswith((".crt", ".pem")) and not path.is_symlink()
                )
                if (
                    added
                    and certificate_file
                    and path.is_file()
                    and certificates(path.read_bytes()) & added
                ):
                    found.append(f"{relative}/{name} (a certificate of the build's CA bundle)")
        assert (root / "usr/local/bin/train").is_file()
        assert not any((root / "tmp").iterdir()), list((root / "tmp").iterdir())
    assert found == []
