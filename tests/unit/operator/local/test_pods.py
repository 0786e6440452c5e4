"""Local pods: mounts become folders, arguments and variables follow them, Secrets come from the manifests."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from kubellm.operator.local.documents import load_manifests
from kubellm.operator.local.pods import LocalPod, PodError, WorkFolder, mount_map, translate
from kubellm.operator.local.runner import LOCAL_IMAGE
from kubellm.operator.manifests import finetunejob as ftj_manifests
from tests.api_cases import EXAMPLES


def _training_pod(tmp_path: Path) -> tuple[dict[str, Any], dict[str, str], WorkFolder]:
    resource = load_manifests([EXAMPLES / "finetunejob.yaml"]).resources[0]
    children = ftj_manifests.build_children(resource.owner, resource.spec, LOCAL_IMAGE)
    return children[-1]["spec"]["template"]["spec"], children[0]["data"], WorkFolder(tmp_path / "work")


def test_mounts_map_to_the_pod_folder_the_shared_cache_and_the_claims(tmp_path: Path) -> None:
    pod_spec, _, work = _training_pod(tmp_path)
    mapping = mount_map(pod_spec, tmp_path / "pod", work)
    assert mapping["/etc/kubellm"] == tmp_path / "pod" / "config"
    assert mapping["/tmp"] == tmp_path / "pod" / "tmp"
    assert mapping["/var/cache/kubellm"] == work.cache
    assert mapping["/mnt/pvc/kubellm-models"] == work.pvc_root / "kubellm-models"
    assert translate("/mnt/pvc/kubellm-models/out", mapping) == f"{work.pvc_root}/kubellm-models/out"
    assert translate("/etc/kubellmx", mapping) == "/etc/kubellmx"


def test_the_command_is_the_containers_args_with_local_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    pod_spec, config, work = _training_pod(tmp_path)
    pod = LocalPod("tiny", pod_spec, config, work.pod("FineTuneJob", "tiny"), work, "default")
    argv, env = pod.command()
    assert argv[:3] == [sys.executable, "-m", "kubellm.cli"]
    assert argv[3:] == [
        "train",
        "--config",
        f"{pod.folder}/config/config.yaml",
    ]
    assert env["KUBELLM_PVC_ROOT"] == str(work.pvc_root)
    assert env["HF_HOME"] == f"{work.cache}/huggingface"
    assert env["KUBELLM_CACHE_DIR"] == str(work.cache)  # GGUF conversions are shared by local runs
    assert env["KUBELLM_NAMESPACE"] == "default"
    assert env["KUBELLM_REPORT_DIR"] == str(pod.report_dir)
    assert "KUBERNETES_SERVICE_HOST" not in env


def test_a_distributed_job_runs_as_the_standalone_launcher_with_gloo(tmp_path: Path) -> None:
    resource = load_manifests([EXAMPLES / "finetunejob.yaml"]).resources[0]
    document = resource.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    spec = type(resource.spec).model_validate({**document, "distributed": {"nodes": 2, "processesPerNode": 2}})
    job = ftj_manifests.build_children(resource.owner, spec, LOCAL_IMAGE)[-1]
    work = WorkFolder(tmp_path / "work")
    pod = LocalPod("tiny", job["spec"]["template"]["spec"], {}, work.pod("FineTuneJob", "tiny"), work, "default")
    argv, env = pod.command()
    assert argv[:7] == [
        sys.executable, "-m", "kubellm.runtime.training.launch", "--standalone", "--nproc-per-node", "4", "-m",
    ]  # fmt: skip
    assert argv[7:10] == ["kubellm.cli", "train", "--config"]
    assert env["KUBELLM_DDP_BACKEND"] == "gloo"


def test_secret_variables_come_from_the_manifests_or_fail_clearly(tmp_path: Path) -> None:
    pod_spec, config, work = _training_pod(tmp_path)
    container = pod_spec["containers"][0]
    container["env"].append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hub", "key": "token"}}})
    folder = work.pod("FineTuneJob", "tiny")
    with_secret = LocalPod("tiny", pod_spec, config, folder, work, "default", {("default", "hub"): {"token": "t0k"}})
    assert with_secret.command()[1]["HF_TOKEN"] == "t0k"
    without = LocalPod("tiny", pod_spec, config, folder, work, "default")
    with pytest.raises(PodError, match="needs key 'token' of Secret hub: add the Secret to the manifests"):
        without.command()


def test_a_pod_folder_starts_clean(tmp_path: Path) -> None:
    work = WorkFolder(tmp_path)
    (work.pod("FineTuneJob", "a") / "old.txt").write_text("x")
    assert list(work.pod("FineTuneJob", "a").iterdir()) == []
