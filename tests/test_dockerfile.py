"""What can be checked about the image without building it (make image-test builds and runs it).

hadolint passes; the locks the image installs pin the versions the tests use; the entrypoint
resolves to `python -m container train`; and the build context, computed with Docker's own
.dockerignore rules, holds no credentials, git history, virtual environment or data.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, arguments = full.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def _pins(lock: Path) -> dict[str, str]:
    pins = {}
    for line in lock.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;]+)", line)
        if match:
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return pins


# ---- .dockerignore with Docker's semantics (moby/patternmatcher) --------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax: `*` and `?` stay within a path segment, `**` spans segments."""
    regex = ""
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "*":
            if pattern.startswith("**", index):
                index += 1
                if pattern.startswith("/", index + 1):  # `**/` = zero or more directories
                    index += 1
                    regex += "(?:.*/)?"
                else:
                    regex += ".*"
            else:
                regex += "[^/]*"
        elif char == "?":
            regex += "[^/]"
        elif char == "\\" and index + 1 < len(pattern):
            index += 1
            regex += re.escape(pattern[index])
        elif char == "[":
            end = pattern.find("]", index)
            regex += pattern[index : end + 1] if end != -1 else re.escape(char)
            index = end if end != -1 else index
        else:
            regex += re.escape(char)
        index += 1
    return re.compile(f"^{regex}$")


def parse_dockerignore(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(is_exception, regex) per line, cleaned as Docker does (leading '/', './', trailing '/')."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = line[1:].strip() if exception else line
        pattern = os.path.normpath(pattern).lstrip("/")
        if pattern == ".":
            continue
        rules.append((exception, _pattern_regex(pattern)))
    return rules


def is_excluded(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Last matching rule wins; a rule matches a path or any of its parent directories."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for exception, regex in rules:
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not exception
    return excluded


@pytest.fixture(scope="module")
def ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    return parse_dockerignore((ROOT / ".dockerignore").read_text())


def test_pattern_semantics_match_docker():
    rules = parse_dockerignore("*\n!src/\n**/*.pyc\nsrc/secret?.txt\n")
    assert is_excluded("README.md", rules)
    assert not is_excluded("src/a.py", rules)
    assert not is_excluded("src/deep/er/b.py", rules)
    assert is_excluded("src/deep/c.pyc", rules)
    assert is_excluded("src/secret1.txt", rules)
    assert not is_excluded("src/secret12.txt", rules)  # ? is exactly one character


SECRET_LOOKING_PATHS = [
    "aws_credentials/credentials",
    "aws_credentials/config",
    "aws_credentials/prod-account.pem",
    "aws_credentials/sso/cache/token.json",
    "aws_credentials/.env",
    ".git/config",
    ".git/objects/ab/cdef",
    ".venv/bin/python",
    ".venv/lib/python3.11/site-packages/boto3/__init__.py",
    "data/raccoon/images/raccoon-1.jpg",
    "demo_output/channel/train-00000-of-00001.tfrecord",
    "launch.toml",
    ".env",
    "container/__pycache__/training.cpython-311.pyc",
    "tests/test_launch_aws.py",
]


@pytest.mark.parametrize("path", SECRET_LOOKING_PATHS)
def test_dockerignore_keeps_out(path, ignore_rules):
    assert is_excluded(path, ignore_rules), f"{path} would enter the build context"


def test_build_context_of_this_tree_has_no_credentials(ignore_rules, tmp_path):
    context = []
    for folder, dirs, files in os.walk(ROOT):
        relative_folder = Path(folder).relative_to(ROOT)
        # Docker skips a whole excluded folder unless an exception could re-include part of it.
        dirs[:] = [d for d in dirs if d not in (".git", ".venv")]
        for name in files:
            path = (relative_folder / name).as_posix()
            if not is_excluded(path, ignore_rules):
                context.append(path)
    assert "requirements-image.lock" in context
    assert "container/__main__.py" in context
    for path in context:
        if path.startswith("aws_credentials/"):
            assert path.endswith(".example") or path == "aws_credentials/README.md", path
        assert path.split("/")[0] in {
            "Dockerfile", "requirements-base.lock", "requirements-image.lock",
            "requirements-image-excludes.txt", "pyproject.toml", "README.md",
            "container", "data_prep", "edge", "launch",
        }  # fmt: skip


def test_build_context_holds_every_first_party_module_the_container_imports(ignore_rules):
    first_party = {
        path.name for path in ROOT.iterdir() if path.is_dir() and (path / "__init__.py").exists()
    }
    needed = set()
    for source in (ROOT / "container").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            # The project's own imports all go through the installed root, sagemaker_tfod.
            needed |= {name.split(".")[1] for name in names if name.startswith("sagemaker_tfod.")}
    assert needed <= first_party, needed - first_party
    assert {"container", "data_prep", "edge"} <= needed
    for package in needed:
        assert not is_excluded(f"{package}/__init__.py", ignore_rules), package
        assert re.search(rf"^COPY {package}/ ", DOCKERFILE.read_text(), re.M), (
            f"Dockerfile does not COPY {package}/"
        )


# ---- Dockerfile -------------------------------------------------------------------------


def test_hadolint_passes():
    result = subprocess.run(
        [str(HADOLINT), str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_installs_the_tested_pins():
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    copies = " ".join(args for keyword, args in instructions if keyword == "COPY")
    runs = " ".join(args for keyword, args in instructions if keyword == "RUN")
    assert "requirements-base.lock /tmp/requirements-base.lock" in copies
    assert re.search(r"pip install [^&]*--constraint /tmp/requirements-base\.lock", runs)
    assert re.search(
        r"pip install [^&]*--no-deps --requirement /tmp/requirements-image\.lock", runs
    )
    assert "requirements-dev" not in DOCKERFILE.read_text()

    # Every lock pins the versions requirements.lock (the tests' runtime) pins: the image's
    # packages are a subset of the tested set, at the tested versions.
    runtime = _pins(ROOT / "requirements.lock")
    assert "tensorflow" in runtime
    for lock in ("requirements-dev.lock", "requirements-image.lock", "requirements-base.lock"):
        pins = _pins(ROOT / lock)
        different = {
            name: (version, runtime[name])
            for name, version in pins.items()
            if name in runtime and runtime[name] != version
        }
        assert different == {}, f"{lock} disagrees with requirements.lock: {different}"
    image, base = _pins(ROOT / "requirements-image.lock"), _pins(ROOT / "requirements-base.lock")
    assert set(image) <= set(runtime)
    assert {name for name in base if not name.startswith("nvidia-")} <= set(image)
    assert "tf-models-official" in image and "pandas" not in image


def test_the_excluded_packages_are_out_of_the_image_lock():
    from sagemaker_tfod.launch.image_requirements import read_excludes

    excluded = read_excludes((ROOT / "requirements-image-excludes.txt").read_text())
    assert {"kaggle", "tensorflow-text", "google-api-python-client"} <= excluded
    assert excluded.isdisjoint(_pins(ROOT / "requirements-image.lock"))
    assert excluded <= set(_pins(ROOT / "requirements.lock"))  # each one is a real dependency


def test_no_caches_or_build_tools_left_behind():
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    for run in runs:
        if "pip install" in run:
            assert "--no-cache-dir" in run
        if "apt-get install" in run:
            assert "--no-install-recommends" in run and "rm -rf /var/lib/apt/lists/*" in run
        assert not re.search(r"build-essential|gcc|g\+\+|python3-dev", run)
    env = " ".join(args for keyword, args in instructions if keyword == "ENV")
    assert "PYTHONUNBUFFERED=1" in env


def test_ca_bundle_enters_the_build_only_as_a_secret():
    text = DOCKERFILE.read_text()
    for keyword, args in dockerfile_instructions(text):
        # Every pip install that reaches an index (the project's own needs none).
        if keyword == "RUN" and "pip install" in args and "--no-build-isolation" not in args:
            assert "--mount=type=secret,id=pip-ca," in args
        if keyword in {"COPY", "ADD"}:
            assert not re.search(r"\.(crt|pem)\b", args)
    assert not re.search(r"^ENV .*(PIP_CERT|SSL_CERT_FILE|REQUESTS_CA_BUNDLE)", text, re.M)


def test_entrypoint_is_exec_form_and_resolves_to_container_train(tmp_path):
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    (entrypoint,) = [args for keyword, args in instructions if keyword == "ENTRYPOINT"]
    (cmd,) = [args for keyword, args in instructions if keyword == "CMD"]
    entry, default = json.loads(entrypoint), json.loads(cmd)  # exec form = a JSON array
    assert entry + default == ["python3", "-m", "sagemaker_tfod.container", "train"]
    assert (ROOT / "container" / "__main__.py").is_file()

    # The `train` script the image puts on PATH, rendered by the same printf, runs that module.
    (run,) = [
        args
        for keyword, args in instructions
        if keyword == "RUN" and "/usr/local/bin/train" in args
    ]
    printf = re.search(r"printf ('[^']*')", run).group(1)
    script = tmp_path / "train"
    subprocess.run(f"printf {printf} > {shlex.quote(str(script))}", shell=True, check=True)
    script.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # python3 = this venv's interpreter (a symlink would lose the venv's site-packages).
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
    assert result.stdout.startswith("usage: python -m sagemaker_tfod.container")


# ---- launch/image_requirements.py, the build step that prunes installed requirements ---------

METADATA = """\
Metadata-Version: 2.1
Name: tf-models-official
Version: 2.20.0
Requires-Dist: six
Requires-Dist: kaggle>=1.3.9
Requires-Dist: tf_slim>=1.1.0
Requires-Dist: Cython
Requires-Dist: tensorflow~=2.20.0
Requires-Dist: pyarrow; extra == "arrow"
Summary: keep: Requires-Dist: kaggle in a description is not a requirement

Requires-Dist: kaggle in the body is text
"""


def test_prune_requires_dist_removes_exactly_the_excluded_names():
    from sagemaker_tfod.launch.image_requirements import prune_requires_dist, read_excludes

    excluded = read_excludes(
        '# comment\nkaggle ; sys_platform == "never"\ntf-slim\ncython  # why\npyarrow\n'
    )
    assert excluded == {"kaggle", "tf-slim", "cython", "pyarrow"}
    pruned, removed = prune_requires_dist(METADATA, excluded)
    assert removed == {"kaggle", "tf-slim", "cython", "pyarrow"}
    requires = [line for line in pruned.splitlines() if line.startswith("Requires-Dist:")]
    assert requires == [
        "Requires-Dist: six",
        "Requires-Dist: tensorflow~=2.20.0",
        "Requires-Dist: kaggle in the body is text",  # after the headers: left alone
    ]
    assert "Summary: keep" in pruned


def test_image_requirements_refuses_a_name_no_package_requires(tmp_path, caplog):
    from sagemaker_tfod.launch.image_requirements import main

    excludes = tmp_path / "excludes.txt"
    excludes.write_text('no-such-package-xyz ; sys_platform == "never"\n')
    assert main([str(excludes)]) == 1
    assert "no-such-package-xyz" in caplog.text
