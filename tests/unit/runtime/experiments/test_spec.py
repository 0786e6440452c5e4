"""``kubellm experiment``'s run document: what the operator writes parses, one-line errors, the endpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubellm.operator.api.promptexperiment import PromptExperimentSpec
from kubellm.operator.local.documents import load_manifests
from kubellm.operator.manifests import promptexperiment
from kubellm.runtime.errors import ConfigError
from kubellm.runtime.experiments import command
from kubellm.runtime.experiments.spec import ExperimentOptions, load_experiment, resolve_endpoint

EXAMPLE = Path(__file__).parents[4] / "examples" / "promptexperiment.yaml"

DOCUMENT: dict[str, Any] = {
    "name": "tiny-test",
    "target": {"url": "http://llm:8000/v1", "model": "tiny", "api": "completions"},
    "variants": [{"name": "a", "template": "{{ input }}"}, {"name": "b", "template": "Q: {{ input }}"}],
    "dataset": {"rows": [{"input": "x", "expected": "y"}]},
    "scorers": [{"name": "exact", "type": "exact"}],
}


def _options(*argv: str) -> ExperimentOptions:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return ExperimentOptions.from_args(parser.parse_args(list(argv)))


def _write(tmp_path: Path, document: Any, name: str = "experiment.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document) if name.endswith(".yaml") else json.dumps(document))
    return path


def test_what_the_operator_writes_for_the_example_parses(tmp_path: Path) -> None:
    resources = load_manifests([EXAMPLE.parent]).resources
    resource = next(r for r in resources if r.kind == "PromptExperiment")
    assert isinstance(resource.spec, PromptExperimentSpec)
    endpoint = "http://smollm2.default.svc:80/v1"
    config_map = promptexperiment.build_experiment_config_map(resource.owner, resource.spec, endpoint, "smollm2")
    job = load_experiment(
        _options("--config", str(_write(tmp_path, yaml.safe_load(config_map["data"]["config.yaml"]))))
    )
    assert job.name == "prompt-styles"
    assert [v.name for v in job.variants] == ["zero-shot", "few-shot", "chain-of-thought"]
    assert (job.target.url, job.target.model) == (endpoint, "smollm2")
    assert resolve_endpoint(job) == endpoint


def test_a_document_in_json(tmp_path: Path) -> None:
    job = load_experiment(_options("--config", str(_write(tmp_path, DOCUMENT, "doc.json"))))
    assert (job.name, job.target.model, job.target.api) == ("tiny-test", "tiny", "completions")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({**DOCUMENT, "alpha": "5%"}, r"alpha: String should match pattern"),
        ({**DOCUMENT, "control": "z"}, r"document: control must name one of the variants$"),
        (
            {**DOCUMENT, "variants": [DOCUMENT["variants"][0]]},
            r"document: variants needs at least two entries \(or one, the control, with optimize\)$",
        ),
        ({**DOCUMENT, "target": {"api": "grpc"}}, r"target\.api: Input should be 'chat' or 'completions'"),
        ({**DOCUMENT, "futureField": 1}, r"futureField: Extra inputs are not permitted"),
        ({"kind": "PromptExperiment", "spec": {}}, r"not a run document; run manifests with `kubellm run FILE`"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, document: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        load_experiment(_options("--config", str(_write(tmp_path, document))))
    assert "\n" not in str(error.value)


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("variants: [a\n  b: c\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML or JSON at line \d+"):
        load_experiment(_options("--config", str(path)))


def test_missing_file_or_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.yaml: cannot read: No such file"):
        load_experiment(_options("--config", str(tmp_path / "absent.yaml")))
    with pytest.raises(ConfigError, match="pass --config FILE"):
        load_experiment(_options())


def test_the_endpoint_flag_overrides_the_document_and_is_normalised(tmp_path: Path) -> None:
    config = str(_write(tmp_path, {**DOCUMENT, "target": {"url": "http://llm:8000/v1/"}}))
    assert resolve_endpoint(load_experiment(_options("--config", config))) == "http://llm:8000/v1"
    assert resolve_endpoint(load_experiment(_options("--config", config, "--endpoint", "http://o:9000"))) == (
        "http://o:9000/v1"
    )
    with pytest.raises(ConfigError, match=r"target\.url: String should match pattern"):
        load_experiment(_options("--config", config, "--endpoint", "llm:8000"))
    bare = str(_write(tmp_path, {**DOCUMENT, "target": {}}, "bare.yaml"))
    with pytest.raises(ConfigError, match="no endpoint: pass --endpoint URL"):
        resolve_endpoint(load_experiment(_options("--config", bare)))


def test_the_api_key_comes_from_either_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBELLM_TARGET_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    assert _options().target_api_key == "sk-openai"
    monkeypatch.setenv("KUBELLM_TARGET_API_KEY", "sk-kubellm")
    assert _options().target_api_key == "sk-kubellm"
