"""What ``kubellm experiment`` is given: its flags and the run document ``--config`` names.

The run document (:class:`~kubellm.contract.experiments.ExperimentRun`) is what the operator
writes into the PromptExperiment's ConfigMap: the experiment definition, its name and the
target it resolved (``kubellm run`` takes whole manifests). ``--endpoint`` overrides
``target.url``: the file, then the environment, then the flags.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field

from kubellm.contract.experiments import ExperimentRun, judge_api_key_env
from kubellm.runtime import settings as command_settings
from kubellm.runtime.errors import ConfigError

__all__ = ["ExperimentOptions", "base_url", "judge_api_keys", "load_experiment", "resolve_endpoint"]


class ExperimentOptions(command_settings.CommandOptions):
    """``kubellm experiment``'s flags (each also a ``KUBELLM_*`` variable) and the target's API key."""

    config: Path | None = Field(
        default=None, description="Run document (the PromptExperiment's ConfigMap, /etc/kubellm/config.yaml). Required."
    )
    endpoint: str | None = command_settings.document_option(ExperimentRun, "target.url")
    output: Path = Field(
        default=Path("experiment-results"),
        description="Folder for result.json, report.md and the resumable request log.",
    )
    dataset: Path | None = Field(
        default=None,
        description="JSONL, JSON, CSV or Parquet file of rows read instead of the document's dataset source "
        "(its inputField, expectedField, maxRows and seed still apply).",
    )
    request_timeout: float = Field(default=120.0, gt=0, description="Seconds to wait for one answer.")
    max_retries: int = Field(
        default=4, ge=0, le=100, description="Retries of a request on 429/503/connection errors, with backoff."
    )
    target_api_key: str | None = Field(
        default=None,
        repr=False,
        validation_alias=AliasChoices("KUBELLM_TARGET_API_KEY", "OPENAI_API_KEY"),
        description="The server's API key (the pod maps the Secret there).",
        json_schema_extra={"flag": False},
    )


def load_experiment(options: ExperimentOptions) -> ExperimentRun:
    """The run document, with the flags' overrides; raises :class:`ConfigError` in one line."""
    if options.config is None:
        raise ConfigError("pass --config FILE, a run document (kubellm run takes PromptExperiment manifests)")
    document = options.apply(command_settings.read_document(options.config))
    return command_settings.load_document(ExperimentRun, document, str(options.config))


def resolve_endpoint(run: ExperimentRun) -> str:
    """The base URL requests go to (``target.url``, or ``--endpoint``); ``/v1`` added to a bare host."""
    url = run.target.url
    if url is None:
        raise ConfigError(
            "no endpoint: pass --endpoint URL (the server's OpenAI-compatible base URL) or set target.url"
        )
    return base_url(url)


def base_url(url: str) -> str:
    """An OpenAI-compatible base URL as requests use it: ``/v1`` added to a bare host, no trailing slash."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"endpoint {url!r} is not an http(s) URL")
    path = parts.path.rstrip("/") or "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def judge_api_keys(run: ExperimentRun, environ: Mapping[str, str]) -> dict[str, str]:
    """Per judge scorer with a key in the environment (``KUBELLM_JUDGE_API_KEY_<NAME>``): the key."""
    judges = [scorer.name for scorer in run.scorers if scorer.judge is not None]
    keys = {name: environ.get(judge_api_key_env(name), "") for name in judges}
    return {name: key for name, key in keys.items() if key}
