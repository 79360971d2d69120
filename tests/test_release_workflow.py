"""The release workflow cannot run here (no registry); it is checked for what it must do: lint,
trigger on version tags, build with the same `make image` (Containerfile, build script) as a
developer machine, and push the reference that build prints."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
import yamllint.linter as yamllint_linter
from test_helm import YAMLLINT

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github/workflows/release.yml"


def _steps() -> list[dict]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert workflow[True]["push"]["tags"] == ["v*"]  # YAML 1.1 reads the key `on` as True
    assert workflow["permissions"]["packages"] == "write"
    (job,) = workflow["jobs"].values()
    return job["steps"]


def _step(steps: list[dict], name: str) -> dict:
    return next(step for step in steps if step.get("name") == name)


def test_workflow_passes_yamllint():
    problems = list(yamllint_linter.run(WORKFLOW.read_text(), YAMLLINT))
    assert not problems, [str(p) for p in problems]


def test_workflow_builds_with_make_image_and_pushes_what_it_printed():
    steps = _steps()
    build = _step(steps, "Build the image")
    assert "make --no-print-directory image | tail -n 1" in build["run"]
    assert 'IMAGE="ghcr.io/$owner/neat-exporter:' in build["run"]
    assert build["env"]["BASE"].endswith("debian:bookworm-slim")
    push = _step(steps, "Push the image")["run"]
    assert 'podman push "${{ steps.image.outputs.reference }}"' in push
    # The tag must be the version that `make image` labels the image with.
    assert "neat_exporter/__init__.py" in _step(steps, "The tag is the package version")["run"]


def test_make_image_is_the_build_script_with_the_containerfile():
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^image:\n((?:\t.*\n)+)", makefile, re.M).group(1)
    assert recipe.strip() == "@./scripts/build-image.sh"
    script = (ROOT / "scripts/build-image.sh").read_text()
    assert "--file Containerfile" in script
    assert (ROOT / "Containerfile").is_file()
    # The base the workflow passes is the one the Containerfile defaults to.
    containerfile = (ROOT / "Containerfile").read_text()
    assert "ARG BASE=docker.io/library/debian:bookworm-slim" in containerfile
