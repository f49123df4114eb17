"""What the image needs for SageMaker hosting, checked on the Dockerfile: the bind-to-port label
and a `serve` on the PATH that runs `python -m sagemaker_tfod.container serve`.

Serving inside the built image is `serving_helpers.check_serves_jpeg(base_url, jpeg)`, to be run
by the image test against the running container (not wired in here: building the image is the
image test harness's job).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

from test_dockerfile import DOCKERFILE, ROOT, dockerfile_instructions

LABEL = "com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true"


def test_image_declares_that_it_binds_the_port_sagemaker_passes():
    labels = [
        args
        for keyword, args in dockerfile_instructions(DOCKERFILE.read_text())
        if keyword == "LABEL"
    ]
    assert any(LABEL in args.split() for args in labels), labels


def test_serve_on_the_path_runs_the_container_serve_command(tmp_path):
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    (run,) = [args for keyword, args in instructions if keyword == "RUN" and "bin/serve" in args]
    printf = re.search(r"printf ('[^']*') > /usr/local/bin/serve", run).group(1)
    script = tmp_path / "serve"
    subprocess.run(f"printf {printf} > {shlex.quote(str(script))}", shell=True, check=True)
    script.chmod(0o755)
    assert "chmod 0755" in run and "/usr/local/bin/serve" in run.split("chmod 0755", 1)[1]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    (bin_dir / "python3").chmod(0o755)
    result = subprocess.run(
        [str(script), "--help"],
        cwd=ROOT,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m container serve")
    assert "SAGEMAKER_BIND_TO_PORT" in result.stdout
