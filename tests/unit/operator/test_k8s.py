"""The apply layer's pure parts: paths and the "already holds the desired state" check."""

from __future__ import annotations

from kubellm.operator.k8s import is_subset, resource_path


def test_resource_paths() -> None:
    assert resource_path("v1", "ConfigMap", "ns", "x") == "/api/v1/namespaces/ns/configmaps/x"
    assert resource_path("apps/v1", "Deployment", "ns") == "/apis/apps/v1/namespaces/ns/deployments"
    assert resource_path("kubellm.io/v1alpha1", "ModelDeployment", "ns", "m").endswith("/modeldeployments/m")


def test_subset_ignores_server_defaults_but_sees_edits() -> None:
    desired = {"spec": {"replicas": 1, "template": {"containers": [{"name": "c", "image": "a"}]}}}
    live = {
        "spec": {
            "replicas": 1,
            "progressDeadlineSeconds": 600,
            "template": {"containers": [{"name": "c", "image": "a", "imagePullPolicy": "IfNotPresent"}]},
        }
    }
    assert is_subset(desired, live)
    edited = {"spec": {"replicas": 1, "template": {"containers": [{"name": "c", "image": "b"}]}}}
    assert not is_subset(desired, edited)
    assert not is_subset(desired, {"spec": {"replicas": 1, "template": {"containers": []}}})
    assert is_subset({"cpu": "1"}, {"cpu": "1"})
    assert is_subset({"port": 80}, {"port": "80"})
    assert not is_subset({"a": 1}, {})
