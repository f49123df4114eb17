"""The project installs as one distribution whose packages live under `sagemaker_tfod`.

The wheel is built from this checkout with the real build backend, and its contents are
compared with the source folders, so a new package that pyproject.toml does not list fails here
rather than on a user's machine.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import tomllib
import zipfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SOURCE_FOLDERS = ("container", "data_prep", "edge", "launch")
ROOT_PACKAGE = "sagemaker_tfod"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("wheel")
    completed = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    (built,) = out.glob("*.whl")
    return built


def test_wheel_holds_every_source_file_under_the_root_package(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"{ROOT_PACKAGE}/{path.relative_to(REPO).as_posix()}"
        for folder in SOURCE_FOLDERS
        for path in (REPO / folder).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert expected, "no source files found"
    assert expected - names == set()
    # Nothing lands at the top level of site-packages but the root package and the metadata.
    top_level = {name.split("/")[0] for name in names}
    assert {name for name in top_level if not name.endswith(".dist-info")} == {ROOT_PACKAGE}


def test_every_console_command_points_at_a_main_function():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) >= {"tfod-data-prep", "tfod-container", "tfod-edge", "tfod-launch"}
    for command, target in scripts.items():
        module_name, _, function = target.partition(":")
        assert module_name.startswith(f"{ROOT_PACKAGE}."), command
        completed = subprocess.run(
            [sys.executable, "-c", f"import {module_name} as m; assert callable(m.{function})"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert completed.returncode == 0, f"{command}: {completed.stderr[-1000:]}"
