"""The contract between the operator and the pods: every key the operator writes is read by the runtime.

For each kind, a spec with every optional section set goes through the operator's builder into
the run document of its ConfigMap; the runtime's command reads that file back (one loader, one
model: an unknown key would fail there), and every key of the document must name a field that
runtime code reads (an attribute access of that name in ``kubellm.runtime``). A key the operator
writes and no pod reads (``modelKind``, ``port`` and ``baseModel`` once were) fails here.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from pydantic import BaseModel

from kubellm.contract.experiments import ExperimentRun
from kubellm.contract.schema import ConfigModel
from kubellm.contract.serving import ServerRun
from kubellm.contract.training import AugmentationServer, TrainingRun
from kubellm.operator.api.finetunejob import FineTuneJobSpec
from kubellm.operator.api.modeldeployment import ModelDeploymentSpec
from kubellm.operator.api.promptexperiment import PromptExperimentSpec
from kubellm.operator.local.documents import load_manifests
from kubellm.operator.manifests import finetunejob, modeldeployment, promptexperiment
from kubellm.operator.manifests.common import Owner
from kubellm.runtime.experiments import command as experiment_command
from kubellm.runtime.experiments.spec import ExperimentOptions, load_experiment
from kubellm.runtime.serving import command as serve_command
from kubellm.runtime.training import command as train_command

RUNTIME = Path(__file__).parents[2] / "runtime" / "kubellm" / "runtime"
EXAMPLES = Path(__file__).parents[2] / "examples"
OWNER = Owner(kind="X", name="full", namespace="default", uid="u-1")
SECRET = {"name": "s", "key": "k"}


def _example_spec(kind: str) -> dict[str, Any]:
    resource = next(r for r in load_manifests([EXAMPLES]).resources if r.kind == kind)
    return dict(resource.body["spec"])


def _full_training_spec() -> FineTuneJobSpec:
    spec = _example_spec("FineTuneJob")
    spec["baseModel"] = {"uri": "hf://org/model", "revision": "v1", "tokenSecretRef": SECRET}
    spec["dataset"] = {**spec["dataset"], "maxRows": 100, "format": "auto", "split": "train"}
    spec["search"] = {
        "trials": 2,
        "parameters": [{"name": "learningRate", "type": "logUniform", "low": "1e-5", "high": "1e-3"}],
    }
    spec["dataAugmentation"] = {"modelDeploymentRef": {"name": "llm"}, "model": "llm", "maxNewRows": 4, "seed": 1}
    return FineTuneJobSpec.model_validate(spec)


def _full_serving_spec() -> ModelDeploymentSpec:
    spec = _example_spec("ModelDeployment")
    spec.pop("fineTuneJobRef", None)
    spec["model"] = {"uri": "hf://org/model", "revision": "v1", "tokenSecretRef": SECRET}
    spec["adapters"] = [{"name": "sql", "uri": "pvc://models/sql"}]
    cache = {"url": "redis://redis:6379/0", "passwordSecretRef": SECRET, "ttlSeconds": 60}
    spec["serving"] = {"quantization": "int8", "limits": {"maxPromptTokens": 512}, "cache": cache}
    return ModelDeploymentSpec.model_validate(spec)


def _write(tmp_path: Path, config_map: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    text = config_map["data"]["config.yaml"]
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path, yaml.safe_load(text)


def _args(add_arguments: Any, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def _training_document(tmp_path: Path) -> tuple[dict[str, Any], type[ConfigModel]]:
    server = finetunejob.AugmentationEndpoint(AugmentationServer(url="http://llm.default.svc:80/v1", model="llm"))
    path, document = _write(tmp_path, finetunejob.build_training_config_map(OWNER, _full_training_spec(), server))
    job, _ = train_command.load_run(
        train_command.TrainOptions.from_args(_args(train_command.add_arguments, "--config", str(path)))
    )
    assert job.augmentation_server == server.server
    return document, TrainingRun


def _serving_document(tmp_path: Path) -> tuple[dict[str, Any], type[ConfigModel]]:
    served = modeldeployment.ServedModel(
        uri="hf://org/model", kind="adapter", base_uri="hf://org/base", adapters=(("sql", "pvc://models/sql"),)
    )
    config_map = modeldeployment.build_server_config_map(OWNER, _full_serving_spec(), served)
    path, document = _write(tmp_path, config_map)
    settings = serve_command.build_settings(_args(serve_command.add_arguments, "--config", str(path)))
    assert (settings.serving.quantization, settings.model.revision) == ("int8", "v1")
    return document, ServerRun


def _full_experiment_spec() -> PromptExperimentSpec:
    spec = _example_spec("PromptExperiment")
    graded = {"modelDeploymentRef": {"name": "grader"}, "rubric": "Correct.", "apiKeySecretRef": SECRET}
    direct = {"url": "http://judge:8000/v1", "model": "judge", "rubric": "Plain.", "scale": 10, "maxTokens": 16}
    spec["scorers"] = [
        *spec["scorers"],
        {"name": "quality", "type": "judge", "judge": graded},
        {"name": "plain", "type": "judge", "weight": "0", "judge": direct},
    ]
    spec["optimize"] = {
        "variant": "found",
        "instructions": ["Answer with one word."],
        "proposals": {"count": 2, "model": "writer"},
        "fewShot": {"maxExamples": 2, "trainFraction": "0.2"},
        "trials": 8,
        "searchFraction": "0.4",
        "seed": 1,
    }
    return PromptExperimentSpec.model_validate(spec)


def _experiment_document(tmp_path: Path) -> tuple[dict[str, Any], type[ConfigModel]]:
    judges = {"quality": promptexperiment.JudgeEndpoint(url="http://grader.default.svc:80/v1", model="grader")}
    config_map = promptexperiment.build_experiment_config_map(
        OWNER, _full_experiment_spec(), "http://llm.default.svc:80/v1", "llm", judges=judges
    )
    path, document = _write(tmp_path, config_map)
    options = ExperimentOptions.from_args(_args(experiment_command.add_arguments, "--config", str(path)))
    run = load_experiment(options)
    assert run.target.model == "llm"
    assert [s.judge.url for s in run.scorers if s.judge] == ["http://grader.default.svc:80/v1", "http://judge:8000/v1"]
    return document, ExperimentRun


BUILDERS = {
    "FineTuneJob": _training_document,
    "ModelDeployment": _serving_document,
    "PromptExperiment": _experiment_document,
}


def _fields_written(document: Any, model: type[BaseModel], where: str = "") -> Iterator[tuple[str, str]]:
    """(path in the document, Python name of the field) for every key written, nested ones too."""
    if isinstance(document, list):
        for item in document:
            yield from _fields_written(item, model, where)
        return
    if not isinstance(document, dict):
        return
    for key, value in document.items():
        name, info = next((n, i) for n, i in model.model_fields.items() if key in (n, i.alias))
        yield f"{where}{key}", name
        nested = _nested_model(info.annotation)
        if nested is not None:
            yield from _fields_written(value, nested, f"{where}{key}.")


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *get_args(annotation), *(a for arg in get_args(annotation) for a in get_args(arg))):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _runtime_source() -> str:
    return "\n".join(path.read_text() for path in RUNTIME.rglob("*.py"))


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_every_key_the_operator_writes_is_read_by_the_runtime(kind: str, tmp_path: Path) -> None:
    document, model = BUILDERS[kind](tmp_path)
    source = _runtime_source()
    written = dict(_fields_written(document, model))
    assert len(written) > 20, "the full spec should exercise most of the document"
    unread = sorted(path for path, name in written.items() if not re.search(rf"\.{name}\b", source))
    assert unread == [], f"{kind}: the operator writes keys no runtime code reads: {unread}"


def test_no_secret_travels_in_a_run_document(tmp_path: Path) -> None:
    for build in BUILDERS.values():
        document, _ = build(tmp_path)
        assert "SecretRef" not in yaml.safe_dump(document)
