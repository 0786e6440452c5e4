"""The Argo CD Lua health checks, run by a real Lua interpreter (lupa) on fixture objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import LuaRuntime

from kubellm.operator.api.health import HEALTH_RULES, HealthRule, argocd_cm_snippet, main

SNIPPET = Path(__file__).resolve().parents[4] / "examples" / "argocd" / "argocd-cm-health.yaml"
RULES = {rule.kind: rule for rule in HEALTH_RULES}


def _condition(kind: str, status: str, reason: str = "Because", message: str = "said so") -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


def _obj(status: dict[str, Any] | None, generation: int = 2, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "x", "generation": generation}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-29T00:00:00Z"
    obj: dict[str, Any] = {"apiVersion": "kubellm.io/v1alpha1", "metadata": meta}
    if status is not None:
        obj["status"] = status
    return obj


def _status(*conditions: dict[str, Any], observed: int = 2) -> dict[str, Any]:
    return {"observedGeneration": observed, "conditions": list(conditions)}


def _run(script: str, obj: dict[str, Any]) -> tuple[str, str]:
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script)
    return str(result["status"]), str(result["message"])


def _installed_scripts() -> dict[str, str]:
    data = yaml.safe_load(SNIPPET.read_text())["data"]
    return {rule.kind: data[rule.config_key] for rule in HEALTH_RULES}


def _cases(rule: HealthRule) -> list[tuple[str, dict[str, Any], str]]:
    summary, terminal = rule.summary, rule.terminal_reasons[-1]
    cases = [
        ("no status", _obj(None), "Progressing"),
        ("stale generation", _obj(_status(_condition(summary, "True"), observed=1)), "Progressing"),
        ("progressing", _obj(_status(_condition(summary, "False", "Working"))), "Progressing"),
        ("no conditions yet", _obj(_status()), "Progressing"),
        ("healthy", _obj(_status(_condition(summary, "True"))), "Healthy"),
        ("terminal reason", _obj(_status(_condition(summary, "False", terminal))), "Degraded"),
        ("degraded condition", _obj(_status(_condition(summary, "False"), _condition("Degraded", "True"))), "Degraded"),
        ("deleting", _obj(_status(_condition(summary, "True")), deleting=True), "Progressing"),
    ]
    if rule.failure is not None:
        failed = _obj(_status(_condition(summary, "False"), _condition(rule.failure, "True", "BackoffLimitExceeded")))
        cases.append(("failed", failed, "Degraded"))
    return cases


ALL_CASES = [(rule.kind, name, obj, want) for rule in HEALTH_RULES for name, obj, want in _cases(rule)]


@pytest.mark.parametrize(("kind", "name", "obj", "want"), ALL_CASES, ids=[f"{c[0]}-{c[1]}" for c in ALL_CASES])
def test_installed_script_returns_documented_health(kind: str, name: str, obj: dict[str, Any], want: str) -> None:
    status, message = _run(_installed_scripts()[kind], obj)
    assert status == want, f"{kind} {name}: {status} ({message})"
    assert message


def test_messages_explain_the_state() -> None:
    script = _installed_scripts()["FineTuneJob"]
    assert _run(script, _obj(None, generation=3))[1] == "Waiting for the operator to observe generation 3"
    failed = _obj(_status(_condition("Failed", "True", "BackoffLimitExceeded", "pod failed 4 times")))
    assert _run(script, failed) == ("Degraded", "BackoffLimitExceeded: pod failed 4 times")
    assert _run(script, _obj(None, deleting=True))[1] == "Being deleted"


def test_one_script_per_kind_under_argo_cd_keys() -> None:
    data = yaml.safe_load(SNIPPET.read_text())["data"]
    assert sorted(data) == sorted(
        f"resource.customizations.health.kubellm.io_{kind}"
        for kind in ("FineTuneJob", "ModelDeployment", "PromptExperiment")
    )
    assert RULES["FineTuneJob"].summary == "Succeeded" and RULES["ModelDeployment"].summary == "Ready"


def test_committed_snippet_is_current(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert SNIPPET.read_text() == argocd_cm_snippet()
    assert main([str(SNIPPET), "--check"]) == 0
    stale = tmp_path / "cm.yaml"
    stale.write_text("data: {}\n")
    assert main([str(stale), "--check"]) == 1
    assert "is stale" in capsys.readouterr().err
