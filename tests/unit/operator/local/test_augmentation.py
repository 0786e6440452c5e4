"""``kubellm run`` with a FineTuneJob that augments its data with a ModelDeployment: order and output."""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubellm.contract.training import AugmentationReport, DataQualityReport
from kubellm.operator.api import finetunejob as ftj
from kubellm.operator.local.documents import ManifestError, ManifestSet, load_manifests
from kubellm.operator.local.pods import WorkFolder
from kubellm.operator.local.runner import LocalRun
from tests.api_cases import load_example


def _augmented(name: str, model_deployment: str) -> dict[str, Any]:
    manifest = copy.deepcopy(load_example("finetunejob"))
    manifest["metadata"]["name"] = name
    manifest["spec"]["output"]["pvc"]["path"] = name
    manifest["spec"]["dataAugmentation"] = {"modelDeploymentRef": {"name": model_deployment}}
    return manifest


def _write(folder: Path, *documents: dict[str, Any]) -> Path:
    path = folder / "all.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    return path


def test_a_finetunejob_runs_after_the_model_deployment_that_augments_its_data(tmp_path: Path) -> None:
    base, server = load_example("finetunejob"), load_example("modeldeployment")
    augmented = _augmented("augmented", server["metadata"]["name"])
    manifests = load_manifests([_write(tmp_path, augmented, server, base)])
    assert [(r.kind, r.name) for r in manifests.resources] == [
        ("FineTuneJob", base["metadata"]["name"]),
        ("ModelDeployment", server["metadata"]["name"]),
        ("FineTuneJob", "augmented"),
    ]


def test_a_missing_or_circular_augmenting_model_deployment_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="augments its data with ModelDeployment nowhere, which is not among"):
        load_manifests([_write(tmp_path, _augmented("augmented", "nowhere"))])
    server = load_example("modeldeployment")
    server["spec"]["fineTuneJobRef"] = {"name": "augmented"}  # serves the job it should write rows for
    circular = _augmented("augmented", server["metadata"]["name"])
    with pytest.raises(ManifestError, match="reference each other in a cycle"):
        load_manifests([_write(tmp_path, circular, server)])


def test_the_augmentation_counts_are_printed_once(tmp_path: Path) -> None:
    out = io.StringIO()
    run = LocalRun(manifests=ManifestSet(), work=WorkFolder(tmp_path), out=out)
    counts = AugmentationReport(
        model="dummy://llama", requested=10, generated=8, invalid=1, failed=1, duplicates=2, failed_checks=1, kept=5
    )
    quality = DataQualityReport(passed=True, rows=20, kept=20, augmentation=counts)
    shown: dict[str, Any] = {}
    for _ in range(2):
        run._training_notes(ftj.FineTuneJobStatus(data_quality=quality), shown)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("  data quality passed: 20 rows read, 20 kept")
    assert lines[1:] == [
        "  data augmentation: 10 rows asked of dummy://llama, 5 kept (2 duplicates, 1 failed the checks, "
        "1 unreadable, 1 failed requests)"
    ]
