"""The project installs as one distribution whose packages live under `sagemaker_tfod`.

The wheel is built from this checkout with the real build backend, and its contents are
compared with the source folders, so a new package that pyproject.toml does not list fails here
rather than on a user's machine. The wheel is then installed into fresh virtual environments
(uv, from its cache when it can) with no extra and with the `pi` extra from a git URL, and the
console commands run there, outside the checkout. The extras are checked against the lock and
against what the code imports: whatever `edge` reaches, in `data_prep` too, must come with the
`pi` extra. (The arm64 install is tests/test_pi_arm64.py.)
"""

from __future__ import annotations

import ast
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import WHEEL_SOURCES, cannot_run_here

REPO = pathlib.Path(__file__).resolve().parents[1]
SOURCE_FOLDERS = ("container", "data_prep", "edge", "launch")
ROOT_PACKAGE = "sagemaker_tfod"


def test_wheel_holds_every_source_file_under_the_root_package(built_wheel):
    names = set(zipfile.ZipFile(built_wheel).namelist())
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


PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
BASE = [Requirement(text) for text in PYPROJECT["dependencies"]]
EXTRAS = {
    name: [Requirement(text) for text in texts]
    for name, texts in PYPROJECT["optional-dependencies"].items()
}


def _lock_pins(path: pathlib.Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if match:
            pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def test_every_dependency_is_in_the_lock_at_a_version_its_range_allows():
    pins = _lock_pins(REPO / "requirements.lock")
    direct = {
        canonicalize_name(Requirement(line.split("#")[0].strip()).name)
        for line in (REPO / "requirements.in").read_text().splitlines()
        if line.split("#")[0].strip() and not line.startswith("-")
    }
    for requirement in BASE + [r for group in EXTRAS.values() for r in group]:
        name = canonicalize_name(requirement.name)
        assert name in direct, f"{requirement.name} is not in requirements.in, so not locked"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside pyproject's {requirement}"
        )
    assert set(EXTRAS) == {"pi", "onnx", "host", "train"}


def test_each_optional_module_names_the_extra_that_installs_it():
    from sagemaker_tfod.data_prep.console import OPTIONAL_MODULES

    for module, (package, extra) in OPTIONAL_MODULES.items():
        names = {canonicalize_name(r.name) for r in EXTRAS[extra]}
        assert canonicalize_name(package) in names, f"{module}: {package} is not in [{extra}]"


# What the Pi side may import, besides the standard library: the base dependencies and the
# `pi` extra; the other TFLite runtime; TensorFlow only for SavedModels and frozen graphs
# (lazily, with a clear error: the Pi runs .tflite files); picamera2 from apt; onnxruntime for
# model.onnx, from the `onnx` extra.
PI_IMPORTS = {"numpy", "PIL", "defusedxml", "tqdm", "ai_edge_litert", "cv2", "pycocotools"}
PI_OPTIONAL_IMPORTS = {"tflite_runtime", "tensorflow", "google", "picamera2", "onnxruntime"}


def _imports_of(path: pathlib.Path) -> set[str]:
    """Every module `path` imports, at its top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _source_of(module: str) -> pathlib.Path | None:
    parts = module.split(".")
    if parts[0] != ROOT_PACKAGE or len(parts) < 2:
        return None
    base = REPO.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def edge_import_closure() -> tuple[set[str], set[str]]:
    """(project modules, third-party top-level names) that `sagemaker_tfod.edge` reaches."""
    pending = [f"{ROOT_PACKAGE}.edge.{p.stem}" for p in (REPO / "edge").glob("*.py")]
    seen, third_party = set(), set()
    while pending:
        module = pending.pop()
        source = _source_of(module)
        if module in seen or source is None:
            continue
        seen.add(module)
        for imported in _imports_of(source):
            top = imported.split(".")[0]
            if top == ROOT_PACKAGE:
                pending.append(imported)
            elif top not in sys.stdlib_module_names and top != "__future__":
                third_party.add(top)
    return seen, third_party


def test_what_edge_imports_needs_nothing_outside_the_pi_extra():
    modules, third_party = edge_import_closure()
    assert third_party - PI_IMPORTS - PI_OPTIONAL_IMPORTS == set()
    assert not any(m.startswith(f"{ROOT_PACKAGE}.container") for m in modules)
    assert not any(m.startswith(f"{ROOT_PACKAGE}.launch") for m in modules)
    # The data_prep modules the Pi uses (schema, examples, files, console, errors): their
    # own imports are in the closure above, so they are checked too.
    assert f"{ROOT_PACKAGE}.data_prep.examples" in modules
    installed_by_pi = {canonicalize_name(r.name) for r in BASE + EXTRAS["pi"]}
    import_to_package = {"PIL": "pillow", "cv2": "opencv-python-headless"}
    for name in PI_IMPORTS:
        assert canonicalize_name(import_to_package.get(name, name)) in installed_by_pi, name


def _uv() -> list[str] | None:
    uv = pathlib.Path(sys.executable).parent / "uv"
    return [str(uv)] if uv.is_file() else None


def _venv(path: pathlib.Path) -> pathlib.Path:
    """A fresh virtual environment (no site packages) with this interpreter's Python."""
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(path)], check=True)
    return path / "bin"


def _install(bin_dir: pathlib.Path, *requirements: str) -> None:
    """Install with uv (its cache holds what `make install` fetched), else with pip."""
    uv = _uv()
    if uv:
        command = [*uv, "pip", "install", "--quiet", "--python", str(bin_dir / "python")]
    else:
        subprocess.run([str(bin_dir / "python"), "-m", "ensurepip", "--default-pip"], check=True)
        command = [str(bin_dir / "python"), "-m", "pip", "install", "--quiet"]
    completed = subprocess.run(
        [*command, *requirements],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={**os.environ, "PIP_CONSTRAINT": "", "UV_CONSTRAINT": ""},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]


def _run(bin_dir: pathlib.Path, command: str, *arguments: str, cwd: pathlib.Path):
    """A console command of the virtual environment, outside the checkout."""
    environment = {
        key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    return subprocess.run(
        [str(bin_dir / command), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=cwd,
        env={**environment, "PATH": f"{bin_dir}:{environment.get('PATH', '')}"},
    )


@pytest.mark.slow
def test_the_base_install_gives_every_console_command(built_wheel, tmp_path):
    """`pip install .` (no extra): numpy, Pillow, defusedxml, tqdm. The data commands work;
    the others say in one line which extra they need."""
    bin_dir = _venv(tmp_path / "venv")
    _install(bin_dir, str(built_wheel))
    for command in ("tfod-data-prep", "tfod-edge"):
        completed = _run(bin_dir, command, "--help", cwd=tmp_path)
        assert completed.returncode == 0, completed.stderr
        assert completed.stdout.startswith(f"usage: {command} "), completed.stdout[:200]
    for command, needs, extra in (
        ("tfod-launch", "boto3", "host"),
        ("tfod-container", "tf-models-official", "train"),  # presets import it first
    ):
        completed = _run(bin_dir, command, "--help", cwd=tmp_path)
        assert completed.returncode != 0
        assert completed.stderr.count("\n") == 1, completed.stderr
        assert f"needs {needs}" in completed.stderr
        assert f"sagemaker-tf-object-detection[{extra}]" in completed.stderr
    synth = _run(bin_dir, "tfod-data-prep", "synth", "voc", "--num-images", "6", cwd=tmp_path)
    assert synth.returncode == 0, synth.stderr
    build = _run(bin_dir, "tfod-data-prep", "build", "voc", "channel", cwd=tmp_path)
    assert build.returncode == 0, build.stderr
    stats = _run(bin_dir, "tfod-data-prep", "stats", "channel", cwd=tmp_path)
    assert stats.returncode == 2
    assert "needs matplotlib" in stats.stderr and "[host]" in stats.stderr
    detect = _run(bin_dir, "tfod-edge", "detect", "--model", "m.tflite", "voc", cwd=tmp_path)
    assert detect.returncode == 2
    assert "ai-edge-litert" in detect.stderr or "m.tflite" in detect.stderr


def _git_repository_of_the_sources(path: pathlib.Path) -> pathlib.Path:
    """The working tree's sources committed to a fresh repository, for a git URL install."""
    path.mkdir()
    for name in WHEEL_SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, path / name)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-C", str(path)]
    for arguments in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "sources"]):
        subprocess.run([*git, *arguments], check=True, capture_output=True)
    return path


@pytest.mark.slow
def test_the_pi_extra_from_a_git_url_imports_every_edge_module_without_tensorflow(tmp_path):
    repository = _git_repository_of_the_sources(tmp_path / "repository")
    bin_dir = _venv(tmp_path / "venv")
    _install(bin_dir, f"sagemaker-tf-object-detection[pi] @ git+file://{repository}")
    modules, _ = edge_import_closure()
    check = (
        "import importlib, sys\n"
        f"for name in {sorted(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        "import cv2, ai_edge_litert.interpreter, pycocotools.cocoeval\n"
        "for absent in ('tensorflow', 'boto3', 'matplotlib', 'yaml'):\n"
        "    assert absent not in sys.modules, absent\n"
        "    try:\n"
        "        importlib.import_module(absent)\n"
        "    except ImportError:\n"
        "        continue\n"
        "    raise AssertionError(absent + ' is installed by the pi extra')\n"
        "print(len(sys.modules))\n"
    )
    completed = _run(bin_dir, "python", "-c", check, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    usage = _run(bin_dir, "tfod-edge", "detect", "--help", cwd=tmp_path)
    assert usage.returncode == 0 and "picam" in usage.stdout


def test_a_machine_that_cannot_run_a_test_fails_it_under_ci_and_skips_it_by_hand(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no tmpfs"):
        cannot_run_here("no tmpfs")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no tmpfs"):
        cannot_run_here("no tmpfs")
