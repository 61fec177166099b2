"""deploy/kubernetes: the manifests are well-formed, consistent, and run real commands.

A structural check of the kinds used (the fields Kubernetes requires, their
types, and no field outside the ones listed, which catches a misspelt or
misplaced key the API server would reject or ignore), the references between
objects (selectors, named ports, volumes, the ConfigMap), and the commands:
every ``pilotfish`` container's arguments parse with ``pilotfish``'s own
parser, the ConfigMap's mesh passes ``pilotfish validate``, and the
Deployment's command line serves it, ready on ``/readyz``. No network.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.cli import build_parser
from controlplane.config.store import ConfigStore, validate_directory

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"

# -- a structural schema of the kinds used ----------------------------------------
# A dict schema maps field names to schemas; a trailing "!" marks a required field.
# [schema] is a list of that schema; a type is a scalar of that type; "quantity" is
# an int or a string; "any" takes anything (labels and the like are checked as maps).

Schema = Any
STR_MAP = {"*": str}
METADATA = {"name!": str, "namespace": str, "labels": STR_MAP, "annotations": STR_MAP}
SELECTOR = {"matchLabels": STR_MAP, "matchExpressions": ["any"]}
INT_OR_STR = "int-or-string"
PROBE = {
    "httpGet": {"path": str, "port!": INT_OR_STR, "scheme": str},
    "grpc": {"port!": int, "service": str},
    "tcpSocket": {"port!": INT_OR_STR},
    "initialDelaySeconds": int,
    "periodSeconds": int,
    "timeoutSeconds": int,
    "failureThreshold": int,
    "successThreshold": int,
}
RESOURCES = {
    "requests": {"cpu": INT_OR_STR, "memory": str},
    "limits": {"cpu": INT_OR_STR, "memory": str},
}
CONTAINER = {
    "name!": str,
    "image!": str,
    "command": [str],
    "args": [str],
    "env": [{"name!": str, "value": str}],
    "ports": [{"name": str, "containerPort!": int, "protocol": ("TCP", "UDP", "SCTP")}],
    "readinessProbe": PROBE,
    "livenessProbe": PROBE,
    "startupProbe": PROBE,
    "resources": RESOURCES,
    "securityContext": {
        "allowPrivilegeEscalation": bool,
        "readOnlyRootFilesystem": bool,
        "runAsNonRoot": bool,
        "capabilities": {"drop": [str], "add": [str]},
    },
    "volumeMounts": [{"name!": str, "mountPath!": str, "readOnly": bool, "subPath": str}],
    "restartPolicy": ("Always",),
}
POD_SPEC = {
    "containers!": [CONTAINER],
    "initContainers": [CONTAINER],
    "terminationGracePeriodSeconds": int,
    "securityContext": {"runAsNonRoot": bool, "runAsUser": int, "runAsGroup": int, "fsGroup": int},
    "affinity": {"podAntiAffinity": "any", "podAffinity": "any", "nodeAffinity": "any"},
    "volumes": [
        {
            "name!": str,
            "configMap": {"name!": str, "items": ["any"]},
            "emptyDir": {"medium": str, "sizeLimit": str},
        }
    ],
}
SERVICE_PORT = {
    "name": str,
    "port!": int,
    "targetPort": INT_OR_STR,
    "protocol": ("TCP", "UDP", "SCTP"),
    "appProtocol": str,
}
SCHEMAS: dict[tuple[str, str], Schema] = {
    ("apps/v1", "Deployment"): {
        "apiVersion!": str,
        "kind!": str,
        "metadata!": METADATA,
        "spec!": {
            "replicas": int,
            "selector!": SELECTOR,
            "strategy": {
                "type": ("RollingUpdate", "Recreate"),
                "rollingUpdate": {"maxUnavailable": INT_OR_STR, "maxSurge": INT_OR_STR},
            },
            "template!": {
                "metadata": {"labels": STR_MAP, "annotations": STR_MAP},
                "spec!": POD_SPEC,
            },
        },
    },
    ("v1", "Service"): {
        "apiVersion!": str,
        "kind!": str,
        "metadata!": METADATA,
        "spec!": {
            "selector": STR_MAP,
            "clusterIP": str,
            "type": ("ClusterIP", "NodePort", "LoadBalancer"),
            "ports!": [SERVICE_PORT],
        },
    },
    ("policy/v1", "PodDisruptionBudget"): {
        "apiVersion!": str,
        "kind!": str,
        "metadata!": METADATA,
        "spec!": {"minAvailable": INT_OR_STR, "maxUnavailable": INT_OR_STR, "selector!": SELECTOR},
    },
    ("v1", "ConfigMap"): {"apiVersion!": str, "kind!": str, "metadata!": METADATA, "data": STR_MAP},
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"): {
        "apiVersion!": str,
        "kind!": str,
        "resources!": [str],
    },
}


def problems(value: Any, schema: Schema, path: str = "") -> list[str]:
    """Where ``value`` does not fit ``schema``, one line per problem (empty: it fits)."""
    if schema == "any":
        return []
    if schema == INT_OR_STR:
        ok = isinstance(value, int | str) and not isinstance(value, bool)
        return [] if ok else [f"{path}: expected an int or a string, got {value!r}"]
    if isinstance(schema, type):
        ok = isinstance(value, schema) and (schema is bool or not isinstance(value, bool))
        return [] if ok else [f"{path}: expected {schema.__name__}, got {value!r}"]
    if isinstance(schema, tuple):
        return [] if value in schema else [f"{path}: {value!r} is not one of {schema}"]
    if isinstance(schema, list):
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {value!r}"]
        return [
            p for i, item in enumerate(value) for p in problems(item, schema[0], f"{path}[{i}]")
        ]
    if not isinstance(value, dict):
        return [f"{path}: expected a mapping, got {value!r}"]
    if "*" in schema:
        return [
            p for key, item in value.items() for p in problems(item, schema["*"], f"{path}.{key}")
        ]
    fields = {name.rstrip("!"): sub for name, sub in schema.items()}
    found = [
        f"{path}.{name[:-1]}: required"
        for name in schema
        if name.endswith("!") and name[:-1] not in value
    ]
    for key, item in value.items():
        if key not in fields:
            found.append(f"{path}.{key}: not a field here")
        else:
            found += problems(item, fields[key], f"{path}.{key}")
    return found


def _documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(DEPLOY.rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                yield path, document


DOCUMENTS = list(_documents())


def _of_kind(kind: str, under: Path = DEPLOY) -> list[dict[str, Any]]:
    return [d for path, d in DOCUMENTS if d.get("kind") == kind and path.parent == under]


def _pilotfish_containers() -> list[dict[str, Any]]:
    return [
        container
        for deployment in _of_kind("Deployment") + _of_kind("Deployment", DEPLOY / "git-sync")
        for container in deployment["spec"]["template"]["spec"]["containers"]
        if container.get("command") == ["pilotfish"]
    ]


# -- the validator itself ---------------------------------------------------------


def test_the_structural_check_names_a_missing_field_a_wrong_type_and_a_misplaced_key() -> None:
    schema = SCHEMAS[("policy/v1", "PodDisruptionBudget")]
    bad = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": 7},
        "spec": {"minAvailable": True, "matchLabels": {"app": "x"}},
    }
    assert problems(bad, schema) == [
        ".metadata.name: expected str, got 7",
        ".spec.selector: required",
        ".spec.minAvailable: expected an int or a string, got True",
        ".spec.matchLabels: not a field here",
    ]


# -- the manifests ----------------------------------------------------------------


@pytest.mark.parametrize(
    "path, document",
    DOCUMENTS,
    ids=[f"{p.relative_to(DEPLOY)}:{d.get('kind')}" for p, d in DOCUMENTS],
)
def test_every_manifest_fits_the_structure_of_its_kind(
    path: Path, document: dict[str, Any]
) -> None:
    schema = SCHEMAS.get((document.get("apiVersion"), document.get("kind")))
    assert schema is not None, (
        f"{path}: no schema for {document.get('apiVersion')} {document.get('kind')}"
    )
    assert problems(document, schema) == []


def test_the_kustomization_lists_every_manifest_beside_it() -> None:
    (kustomization,) = _of_kind("Kustomization")
    beside = sorted(p.name for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == beside


@pytest.mark.parametrize("variant", [DEPLOY, DEPLOY / "git-sync"], ids=["configmap", "git-sync"])
def test_each_deployment_runs_two_replicas_ready_from_readyz_behind_the_service_and_budget(
    variant: Path,
) -> None:
    (deployment,) = _of_kind("Deployment", variant)
    spec = deployment["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["replicas"] >= 2
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    pod = spec["template"]["spec"]
    (pilotfish,) = [c for c in pod["containers"] if c.get("command") == ["pilotfish"]]
    ports = {p["name"]: p["containerPort"] for p in pilotfish["ports"]}
    assert pilotfish["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert pilotfish["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    args = build_parser().parse_args(pilotfish["args"])
    assert args.xds_address == f"0.0.0.0:{ports['xds']}"
    assert args.admin_address == f"0.0.0.0:{ports['admin']}"
    # The pods stop within their grace period: serve's --grace fits in it.
    assert args.grace < pod["terminationGracePeriodSeconds"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in pod["containers"] + pod.get("initContainers", []):
        assert {m["name"] for m in container.get("volumeMounts", [])} <= set(volumes)
    mounts = {m["mountPath"]: m["name"] for m in pilotfish["volumeMounts"]}
    assert args.config_dir in mounts
    assert "emptyDir" in volumes[mounts[args.state_dir]]
    if variant == DEPLOY:
        (config_map,) = _of_kind("ConfigMap")
        assert (
            volumes[mounts[args.config_dir]]["configMap"]["name"] == config_map["metadata"]["name"]
        )
    else:
        assert args.poll
    for service in _of_kind("Service"):
        assert service["spec"]["selector"].items() <= labels.items()
        assert {p["targetPort"] for p in service["spec"]["ports"]} == {"xds", "admin"}
    (budget,) = _of_kind("PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["minAvailable"] < spec["replicas"]


def test_the_configmap_mesh_passes_pilotfish_validate(tmp_path: Path) -> None:
    (config_map,) = _of_kind("ConfigMap")
    for name, text in config_map["data"].items():
        (tmp_path / name).write_text(text)
    assert [d.render() for d in validate_directory(tmp_path)] == []


def test_a_git_sync_checkout_is_read_under_current_and_its_worktrees_are_not(
    tmp_path: Path,
) -> None:
    (config_map,) = _of_kind("ConfigMap")
    root = tmp_path / "git"
    first = root / ".worktrees" / "1111"
    first.mkdir(parents=True)
    for name, text in config_map["data"].items():
        (first / name).write_text(text)
    (root / "current").symlink_to(".worktrees/1111")
    store = ConfigStore(root)
    before = store.reload()
    assert sorted(store.files_in_effect) == [f"current/{n}" for n in sorted(config_map["data"])]
    second = root / ".worktrees" / "2222"
    second.mkdir()
    for name, text in config_map["data"].items():
        (second / name).write_text(_shift_weights(text))
    (root / "current.tmp").symlink_to(".worktrees/2222")
    os.replace(root / "current.tmp", root / "current")  # git-sync's swap
    after = store.reload()
    assert after.changed and after.version != before.version
    assert not after.errors


def _start(args: list[str], local: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """``pilotfish`` with a manifest's arguments, paths and ports made local; its admin address."""
    args = list(args)
    for flag, value in local.items():
        args[args.index(flag) + 1] = value
    process = subprocess.Popen(
        [sys.executable, "-m", "controlplane", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stderr is not None
    for line in process.stderr:
        if line.startswith("pilotfish: HTTP admin on http://"):
            return process, line.split("http://", 1)[1].split("/", 1)[0]
    raise AssertionError(f"serve exited with {process.wait(timeout=30)}")


def _get(admin: str, path: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://{admin}{path}", timeout=30) as response:
        return response.status, response.read()


def _stop(process: subprocess.Popen[str]) -> int:
    try:
        process.send_signal(signal.SIGTERM)
        return process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def _local(config_dir: Path, tmp_path: Path) -> dict[str, str]:
    return {
        "--config-dir": str(config_dir),
        "--xds-address": "127.0.0.1:0",
        "--admin-address": "127.0.0.1:0",
        "--state-dir": str(tmp_path / "state"),
    }


def _write_mesh(directory: Path, edit: Callable[[str], str] = str) -> None:
    (config_map,) = _of_kind("ConfigMap")
    directory.mkdir(parents=True)
    for name, text in config_map["data"].items():
        (directory / name).write_text(edit(text))


def _shift_weights(text: str) -> str:
    return text.replace("weight: 90", "weight: 80").replace("weight: 10", "weight: 20")


def test_the_deployment_command_line_serves_the_configmap_and_is_ready(tmp_path: Path) -> None:
    (deployment,) = _of_kind("Deployment")
    (pilotfish,) = deployment["spec"]["template"]["spec"]["containers"]
    _write_mesh(tmp_path / "mesh")
    process, admin = _start(pilotfish["args"], _local(tmp_path / "mesh", tmp_path))
    try:
        assert _get(admin, "/readyz") == (200, b"ready\n")
    finally:
        assert _stop(process) == 0


def test_the_git_sync_command_line_serves_the_checkout_and_follows_its_swap(
    tmp_path: Path,
) -> None:
    (deployment,) = _of_kind("Deployment", DEPLOY / "git-sync")
    (pilotfish,) = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "pilotfish"
    ]
    root = tmp_path / "git"
    _write_mesh(root / ".worktrees" / "1111")
    (root / "current").symlink_to(".worktrees/1111")
    process, admin = _start(pilotfish["args"], _local(root, tmp_path))
    try:
        assert _get(admin, "/readyz") == (200, b"ready\n")
        before = json.loads(_get(admin, "/debug/config")[1])["version"]
        _write_mesh(root / ".worktrees" / "2222", _shift_weights)
        (root / "current.tmp").symlink_to(".worktrees/2222")
        os.replace(root / "current.tmp", root / "current")  # git-sync's swap
        deadline = time.monotonic() + 60
        while json.loads(_get(admin, "/debug/config")[1])["version"] == before:
            assert time.monotonic() < deadline, "the swap was never picked up"
            time.sleep(0.1)
    finally:
        assert _stop(process) == 0
