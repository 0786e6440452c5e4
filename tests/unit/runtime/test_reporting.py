"""The pod-side report transport's pure parts: environment, URL and throttling."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from kubellm.runtime.reporting import (
    ConfigMapReporter,
    DirectoryReporter,
    NullReporter,
    ThrottledStatus,
    reporter_from_env,
)


class Recorder:
    def __init__(self) -> None:
        self.sent: list[dict[str, str]] = []

    def publish(self, files: Mapping[str, str]) -> bool:
        self.sent.append(dict(files))
        return True


def test_outside_a_cluster_nothing_is_sent() -> None:
    assert isinstance(reporter_from_env({}), NullReporter)
    assert isinstance(reporter_from_env({"KUBELLM_REPORT_CONFIGMAP": "x-report"}), NullReporter)


def test_a_report_folder_outside_a_cluster_gets_one_file_per_document(tmp_path: Path) -> None:
    reporter = reporter_from_env({"KUBELLM_REPORT_DIR": str(tmp_path / "report")})
    assert isinstance(reporter, DirectoryReporter)
    assert reporter.publish({"status.json": '{"a": 1}'})
    assert reporter.publish({"status.json": '{"a": 2}', "report.md": "# r"})
    assert json.loads((tmp_path / "report" / "status.json").read_text()) == {"a": 2}
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["report.md", "status.json"]


def test_an_unwritable_report_folder_is_a_false_not_an_exception(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    assert DirectoryReporter(tmp_path / "file" / "report").publish({"status.json": "{}"}) is False


def test_in_cluster_environment_names_the_configmap(tmp_path: Path) -> None:
    (tmp_path / "namespace").write_text("team-a\n")
    env = {
        "KUBELLM_REPORT_CONFIGMAP": "x-report",
        "KUBERNETES_SERVICE_HOST": "fd00::1",
        "KUBERNETES_SERVICE_PORT": "6443",
        "KUBELLM_SERVICEACCOUNT_DIR": str(tmp_path),
    }
    reporter = reporter_from_env(env)
    assert isinstance(reporter, ConfigMapReporter)
    assert reporter.url == "https://[fd00::1]:6443/api/v1/namespaces/team-a/configmaps/x-report"
    assert reporter.token_file == tmp_path / "token"
    other = reporter_from_env({**env, "KUBELLM_NAMESPACE": "team-b"})
    assert isinstance(other, ConfigMapReporter)
    assert other.url.endswith("/namespaces/team-b/configmaps/x-report")


def test_status_is_throttled_but_first_and_final_always_go() -> None:
    now = [0.0]
    recorder = Recorder()
    status = ThrottledStatus(recorder, interval=5.0, clock=lambda: now[0])
    status.update({"progress": {"percent": 1}})
    now[0] = 1.0
    status.update({"progress": {"percent": 2}})
    now[0] = 6.5
    status.update({"progress": {"percent": 3}})
    now[0] = 7.0
    status.update({"progress": {"percent": 4}}, final=True)
    assert [json.loads(sent["status.json"])["progress"]["percent"] for sent in recorder.sent] == [1, 3, 4]


def test_unreachable_api_server_is_a_false_not_an_exception(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t")
    (tmp_path / "ca.crt").write_text("")
    reporter = ConfigMapReporter("https://127.0.0.1:9", "ns", "x-report", tmp_path / "token", tmp_path / "ca.crt", 0.5)
    assert reporter.publish({"status.json": "{}"}) is False
