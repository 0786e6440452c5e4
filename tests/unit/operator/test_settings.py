"""Settings: flags over environment over defaults; no parsing at import time."""

from __future__ import annotations

import pydantic
import pytest

from kubellm.operator.__main__ import build_kopf_settings
from kubellm.operator.settings import OperatorSettings, build_parser, default_image, parse_settings


def test_defaults_are_cluster_wide_with_the_matching_image() -> None:
    settings = parse_settings([], environ={})
    assert settings.clusterwide
    assert settings.image == default_image()
    assert settings.image.startswith("ghcr.io/kubellm/runtime:")


def test_flags_override_environment() -> None:
    env = {
        "KUBELLM_OPERATOR_NAMESPACES": "a,b",
        "KUBELLM_OPERATOR_IMAGE": "env/image:1",
        "KUBELLM_OPERATOR_WORKERS": "3",
    }
    settings = parse_settings(["--image", "flag/image:2", "--server-timeout", "60"], environ=env)
    assert settings.namespaces == ("a", "b")
    assert settings.image == "flag/image:2"
    assert settings.workers == 3
    assert parse_settings(["-n", "x"], environ=env).namespaces == ("x",)
    assert parse_settings(["--all-namespaces"], environ=env).clusterwide


def test_kopf_settings_carry_watch_timeouts() -> None:
    kopf_settings = build_kopf_settings(
        parse_settings(["--server-timeout", "60", "--client-timeout", "90"], environ={})
    )
    assert kopf_settings.watching.server_timeout == 60
    assert kopf_settings.watching.client_timeout == 90
    assert kopf_settings.watching.connect_timeout == 30


def test_leader_election_is_off_by_default_and_needs_a_lease_namespace() -> None:
    settings = parse_settings([], environ={})
    assert not settings.leader_election
    assert (settings.lease_duration_seconds, settings.renew_deadline_seconds, settings.retry_period_seconds) == (
        15,
        10,
        2,
    )
    on = parse_settings(["--leader-election", "--lease-namespace", "ops"], environ={})
    assert on.leader_election and (on.lease_namespace, on.lease_name) == ("ops", "kubellm-operator")
    env = {"KUBELLM_OPERATOR_LEADER_ELECTION": "true", "KUBELLM_OPERATOR_LEASE_NAMESPACE": "ops"}
    assert parse_settings([], environ=env).leader_election
    assert not parse_settings(["--no-leader-election"], environ=env).leader_election
    with pytest.raises(pydantic.ValidationError, match="--lease-namespace"):
        parse_settings(["--leader-election"], environ={})


def test_lease_timings_must_nest() -> None:
    for flags in [["--renew-deadline-seconds", "15"], ["--retry-period-seconds", "10"]]:
        with pytest.raises(pydantic.ValidationError, match="retry-period-seconds < --renew-deadline-seconds"):
            parse_settings(flags, environ={})


def test_every_flag_is_a_described_setting() -> None:
    flags = {action.dest for action in build_parser()._actions} - {"help", "all_namespaces"}
    assert flags <= set(OperatorSettings.model_fields)
    assert all(field.description for field in OperatorSettings.model_fields.values())
