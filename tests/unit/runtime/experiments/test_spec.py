"""Reading the configuration file: manifest or spec, one-line errors, the endpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubellm.runtime.experiments.spec import SpecError, TargetSettings, load_experiment, resolve_endpoint

EXAMPLE = Path(__file__).parents[4] / "examples" / "promptexperiment.yaml"

SPEC: dict[str, Any] = {
    "target": {"url": "http://llm:8000/v1", "model": "tiny", "api": "completions"},
    "timeoutSeconds": 600,
    "image": "kubellm:1",
    "variants": [{"name": "a", "template": "{{ input }}"}, {"name": "b", "template": "Q: {{ input }}"}],
    "dataset": {"rows": [{"input": "x", "expected": "y"}]},
    "scorers": [{"name": "exact", "type": "exact"}],
}


def _write(tmp_path: Path, document: Any, name: str = "experiment.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document) if name.endswith(".yaml") else json.dumps(document))
    return path


def test_the_shipped_example_manifest_loads() -> None:
    job = load_experiment(EXAMPLE)
    assert job.name == "prompt-styles"
    assert [v.name for v in job.config.variants] == ["zero-shot", "few-shot", "chain-of-thought"]
    assert job.target.model_deployment_ref == {"name": "smollm2"} and job.ignored_fields == ()


def test_a_bare_spec_in_json(tmp_path: Path) -> None:
    job = load_experiment(_write(tmp_path, SPEC, "spec.json"))
    assert job.name == "spec"
    assert job.target == TargetSettings(url="http://llm:8000/v1", model="tiny", api="completions")


def test_unknown_spec_fields_are_reported_not_fatal(tmp_path: Path) -> None:
    job = load_experiment(_write(tmp_path, {**SPEC, "futureField": 1}))
    assert job.ignored_fields == ("futureField",)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({**SPEC, "alpha": "5%"}, r"invalid spec\.alpha: String should match pattern"),
        ({**SPEC, "control": "z"}, r"invalid spec: control must name one of the variants$"),
        ({**SPEC, "variants": [SPEC["variants"][0]]}, r"invalid spec\.variants: List should have at least 2 items"),
        ({**SPEC, "target": {"api": "grpc"}}, r"invalid spec\.target\.api: Input should be 'chat' or 'completions'"),
        ({"kind": "ModelDeployment", "spec": {}}, r"no PromptExperiment manifest \(found ModelDeployment\)"),
        ({"kind": "PromptExperiment", "spec": "x"}, r"the PromptExperiment spec must be a mapping"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, document: Any, message: str) -> None:
    with pytest.raises(SpecError, match=message) as error:
        load_experiment(_write(tmp_path, document))
    assert "\n" not in str(error.value)


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("spec:\n  variants: [a\n  b: c\n")
    with pytest.raises(SpecError, match=r"broken\.yaml: not valid YAML or JSON \(line \d+\)"):
        load_experiment(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"absent\.yaml: cannot read: No such file"):
        load_experiment(tmp_path / "absent.yaml")


def test_endpoint_resolution() -> None:
    target = TargetSettings(url="http://llm:8000/v1/")
    assert resolve_endpoint(target, None) == "http://llm:8000/v1"
    assert resolve_endpoint(target, "http://other:9000") == "http://other:9000/v1"
    with pytest.raises(SpecError, match=r"modelDeploymentRef \(tiny\) needs --endpoint"):
        resolve_endpoint(TargetSettings(model_deployment_ref={"name": "tiny"}), None)
    with pytest.raises(SpecError, match="is not an http"):
        resolve_endpoint(target, "llm:8000")
