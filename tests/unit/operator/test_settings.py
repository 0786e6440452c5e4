"""Settings: flags over environment over defaults; no parsing at import time."""

from __future__ import annotations

from kubellm.operator.__main__ import build_kopf_settings
from kubellm.operator.settings import default_image, parse_settings


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
