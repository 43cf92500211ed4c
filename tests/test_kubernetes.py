"""deploy/kubernetes/ must be valid Kubernetes and wired like docker-compose.yml, checked offline.

Each object is validated against the JSON schema of its kind and apiVersion that the PyPI package
kubernetes-validate ships (schemas generated from Kubernetes' OpenAPI specification; strict mode
also rejects unknown fields). The wiring checks then follow every URL to a Service of the
manifests, that Service to the pods it selects and the port to a container port; they check that
the PostgreSQL password is only ever referenced from the Secret, and that the workers run the
master's image and locustfile. The positive controls break a copy of the manifests and expect
each fault to be flagged.
"""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"
DOCS = ROOT / "docs" / "services.md"
# The oldest Kubernetes still supported upstream when this was written, and the newest the
# installed kubernetes-validate has schemas for.
K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())
DEFAULT_PORTS = {"redis": 6379, "rediss": 6379, "postgresql": 5432, "postgres": 5432, "ws": 80, "wss": 443}
URL_SUFFIXES = ("_URL", "_DSN")
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")

Obj = dict[str, Any]


def load(directory: Path = MANIFESTS) -> list[Obj]:
    objects: list[Obj] = []
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                doc.setdefault("metadata", {})
                objects.append(doc)
    return objects


def known_env_names() -> set[str]:
    """Every CACHESTORM_* variable the code reads: the options' env_var and the notifier's."""
    names: set[str] = set()
    for directory in ("cachestorm", "users", "shapes"):
        for path in (ROOT / directory).rglob("*.py"):
            names.update(re.findall(r"[\"'](CACHESTORM_[A-Z0-9_]+)[\"']", path.read_text()))
    return names


def schema_problems(objects: list[Obj], version: str) -> list[str]:
    problems = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            problems.append(f"{obj.get('kind')}/{obj['metadata'].get('name')}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{obj.get('kind')}/{obj['metadata'].get('name')}: {exc}")
    return problems


# --- wiring ------------------------------------------------------------------------------------


def _ns(obj: Obj) -> str:
    return str(obj["metadata"].get("namespace", "default"))


def _workloads(objects: list[Obj]) -> list[Obj]:
    return [o for o in objects if o.get("kind") in {"Deployment", "StatefulSet", "DaemonSet", "Job"}]


def _pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def _argv(container: Obj) -> list[str]:
    return [str(a) for a in container.get("command", []) + container.get("args", [])]


def _flag(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _container_env(container: Obj, objects: list[Obj], ns: str) -> tuple[dict[str, Obj], list[str]]:
    """The container's variables (name -> {"value"} or {"valueFrom"} entry) in definition order
    (envFrom first, as Kubernetes does), and problems with the references."""
    env: dict[str, Obj] = {}
    problems = []
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref is None:
            continue
        maps = [o for o in objects if o.get("kind") == "ConfigMap" and _ns(o) == ns]
        found = [m for m in maps if m["metadata"]["name"] == ref["name"]]
        if not found:
            problems.append(f"envFrom: ConfigMap {ref['name']} is not in the manifests")
            continue
        for key, value in (found[0].get("data") or {}).items():
            env[key] = {"value": str(value), "from": f"ConfigMap {ref['name']}"}
    for entry in container.get("env", []):
        env[entry["name"]] = entry
    return env, problems


def _service_target(objects: list[Obj], ns: str, host: str, port: int) -> tuple[Obj | None, str | None]:
    """The Service a host:port names, or a problem."""
    parts = host.split(".")
    name = parts[0]
    if len(parts) > 1:
        svc_ns = parts[1]
        if parts[2:] not in ([], ["svc"], ["svc", "cluster", "local"]):
            return None, f"{host} is not a Service DNS name"
    else:
        svc_ns = ns
    services = [
        o
        for o in objects
        if o.get("kind") == "Service" and o["metadata"]["name"] == name and _ns(o) == svc_ns
    ]
    if not services:
        return None, f"{host}: no Service {name} in namespace {svc_ns}"
    service = services[0]
    ports = [p for p in service["spec"].get("ports", []) if p["port"] == port]
    if not ports:
        return None, f"{host}:{port}: Service {name} has no port {port}"
    target = ports[0].get("targetPort", port)
    selector = service["spec"].get("selector") or {}
    pods = [
        w
        for w in _workloads(objects)
        if _ns(w) == svc_ns
        and selector
        and selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
    ]
    if not pods:
        return None, f"Service {name} selects no workload of the manifests"
    container_ports = [cp for w in pods for c in _pod_spec(w)["containers"] for cp in c.get("ports", [])]
    if not any(target in (cp.get("name"), cp["containerPort"]) for cp in container_ports):
        return None, f"Service {name} port {port} targets {target}, which no selected container exposes"
    return pods[0], None


def wiring_problems(objects: list[Obj], docs: str) -> list[str]:
    problems: list[str] = []
    known = known_env_names()
    secret_refs = set(re.findall(r"create secret generic (\S+)\s*\\?\s*--from-literal=(\w+)=", docs))
    shipped_secrets = [o for o in objects if o.get("kind") == "Secret"]
    for secret in shipped_secrets:
        problems.append(
            f"Secret {secret['metadata']['name']} is shipped in the manifests: create it with kubectl"
        )
    for cm in (o for o in objects if o.get("kind") == "ConfigMap"):
        for key, value in (cm.get("data") or {}).items():
            url = urlsplit(str(value))
            if url.password:
                problems.append(f"ConfigMap {cm['metadata']['name']}: {key} holds a password")

    locust: dict[str, tuple[Obj, Obj]] = {}
    for workload in _workloads(objects):
        ns = _ns(workload)
        wname = workload["metadata"]["name"]
        for container in _pod_spec(workload)["containers"]:
            where = f"{workload['kind']}/{wname}/{container['name']}"
            argv = _argv(container)
            env, env_problems = _container_env(container, objects, ns)
            problems += [f"{where}: {p}" for p in env_problems]
            for arg in argv:
                if urlsplit(arg).password or arg in ("--redis-url", "--pg-dsn", "--ws-url"):
                    problems.append(
                        f"{where}: a service URL on the command line ({arg}): use the environment"
                    )
            defined: list[str] = []
            for name, entry in env.items():
                ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
                if ref is not None and (ref["name"], ref["key"]) not in secret_refs:
                    problems.append(
                        f"{where}: {name} references Secret {ref['name']} key {ref['key']}, "
                        "which docs/services.md does not say how to create"
                    )
                if name.startswith("CACHESTORM_") and name not in known:
                    problems.append(f"{where}: {name} is not a cachestorm option")
                if name.endswith("PASSWORD") and ref is None:
                    problems.append(f"{where}: {name} is not taken from a Secret")
                value = entry.get("value")
                if isinstance(value, str):
                    for var in VAR_REF.findall(value):
                        if var not in defined:
                            problems.append(f"{where}: {name} uses $({var}) before it is defined")
                    if name.startswith("CACHESTORM_") and name.endswith(URL_SUFFIXES) and value:
                        problems += [f"{where}: {name}: {p}" for p in _url_problems(value, env, objects, ns)]
                defined.append(name)
            if argv[:1] == ["locust"]:
                role = "master" if "--master" in argv else "worker" if "--worker" in argv else "?"
                locust[role] = (workload, container)

    if set(locust) != {"master", "worker"}:
        problems.append(f"expected one Locust master and one worker workload, found {sorted(locust)}")
        return problems
    (mw, master), (ww, worker) = locust["master"], locust["worker"]
    margv, wargv = _argv(master), _argv(worker)
    if master["image"] != worker["image"]:
        problems.append(f"worker image {worker['image']} is not the master's {master['image']}")
    if _flag(margv, "-f") != _flag(wargv, "-f"):
        problems.append(f"worker locustfile {_flag(wargv, '-f')} is not the master's {_flag(margv, '-f')}")
    menv, _ = _container_env(master, objects, _ns(mw))
    wenv, _ = _container_env(worker, objects, _ns(ww))
    mopts = {k: v for k, v in menv.items() if k.startswith("CACHESTORM_") and k != "CACHESTORM_RESULTS_DIR"}
    wopts = {k: v for k, v in wenv.items() if k.startswith("CACHESTORM_") and k != "CACHESTORM_RESULTS_DIR"}
    if mopts != wopts:
        problems.append(f"worker options {sorted(wopts)} differ from the master's {sorted(mopts)}")
    for name in ("CACHESTORM_REDIS_URL", "CACHESTORM_PG_DSN", "CACHESTORM_WS_URL"):
        if name not in menv:
            problems.append(f"the master has no {name}: it would start embedded services")
    if _flag(margv, "--web-host") is None:
        problems.append("the master's --web-host is not given")
    master_host = _flag(wargv, "--master-host")
    master_port = int(_flag(wargv, "--master-port") or 5557)
    bind_port = int(_flag(margv, "--master-bind-port") or 5557)
    if master_host is None:
        problems.append("the worker has no --master-host")
    else:
        target, problem = _service_target(objects, _ns(ww), master_host, master_port)
        if problem:
            problems.append(f"worker --master-host: {problem}")
        elif target is not mw:
            problems.append(f"worker --master-host {master_host} does not select the master")
        else:
            name = master_host.split(".")[0]
            svc = next(o for o in objects if o.get("kind") == "Service" and o["metadata"]["name"] == name)
            port = next(p for p in svc["spec"]["ports"] if p["port"] == master_port)
            named = {p.get("name"): p["containerPort"] for p in master.get("ports", [])}
            target_port = named.get(port.get("targetPort"), port.get("targetPort", master_port))
            if target_port != bind_port:
                problems.append(f"Service {master_host}:{master_port} reaches {target_port}, not {bind_port}")
    for svc in (o for o in objects if o.get("kind") == "Service"):
        if svc["spec"].get("type", "ClusterIP") != "ClusterIP":
            problems.append(
                f"Service {svc['metadata']['name']} is {svc['spec']['type']}: keep the web UI private"
            )
    if mw["spec"].get("replicas", 1) != 1:
        problems.append("more than one master")
    return problems


def _url_problems(value: str, env: dict[str, Obj], objects: list[Obj], ns: str) -> list[str]:
    url = urlsplit(value)
    problems = []
    if url.password is not None:
        var = VAR_REF.fullmatch(url.password)
        if var is None:
            problems.append("the password is written in the manifest: take it from a Secret as $(VAR)")
        elif ((env.get(var.group(1)) or {}).get("valueFrom") or {}).get("secretKeyRef") is None:
            problems.append(f"$({var.group(1)}) is not taken from a Secret")
    if not url.hostname:
        return [*problems, f"{value} has no host"]
    port = url.port or DEFAULT_PORTS.get(url.scheme)
    if port is None:
        return [*problems, f"{value}: no port"]
    _, problem = _service_target(objects, ns, url.hostname, port)
    return problems + ([problem] if problem else [])


# --- tests -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def objects() -> list[Obj]:
    return load()


@pytest.fixture(scope="module")
def docs() -> str:
    return DOCS.read_text()


def test_manifests_hold_every_part(objects: list[Obj]) -> None:
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for name in ("redis", "postgres", "notifier", "master", "worker"):
        assert ("Deployment", name) in names
    for name in ("redis", "postgres", "notifier", "master"):
        assert ("Service", name) in names
    assert ("PersistentVolumeClaim", "cachestorm-results") in names


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_matches_its_schema(objects: list[Obj], version: str) -> None:
    assert schema_problems(objects, version) == []


def test_wiring(objects: list[Obj], docs: str) -> None:
    assert wiring_problems(objects, docs) == []


def test_workers_scale_and_results_persist(objects: list[Obj]) -> None:
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    assert deployments["worker"]["spec"]["replicas"] > 1
    master = _pod_spec(deployments["master"])
    mount = next(m for m in master["containers"][0]["volumeMounts"] if m["mountPath"] == "/results")
    volume = next(v for v in master["volumes"] if v["name"] == mount["name"])
    assert volume["persistentVolumeClaim"]["claimName"] == "cachestorm-results"


def test_docs_commands_match_the_manifests(objects: list[Obj], docs: str) -> None:
    section = docs.split("## Kubernetes", 1)[1]
    assert "kubectl apply -f deploy/kubernetes/" in section
    assert "scale deployment/worker" in section
    namespaces = {_ns(o) for o in objects if o["kind"] != "Namespace"}
    assert namespaces == {"cachestorm"}
    for line in section.splitlines():
        if line.strip().startswith("kubectl ") and "apply" not in line:
            assert "-n cachestorm" in line, line


# --- positive controls: a broken copy must be flagged ------------------------------------------


def _find(objects: list[Obj], kind: str, name: str) -> Obj:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def _container(objects: list[Obj], name: str) -> Obj:
    container: Obj = _pod_spec(_find(objects, "Deployment", name))["containers"][0]
    return container


def _env(objects: list[Obj], name: str, var: str) -> Obj:
    return next(e for e in _container(objects, name)["env"] if e["name"] == var)


def test_schema_flags_a_wrong_field_type(objects: list[Obj]) -> None:
    broken = copy.deepcopy(objects)
    _find(broken, "Deployment", "worker")["spec"]["replicas"] = "four"
    problems = schema_problems(broken, K8S_VERSIONS[0])
    assert len(problems) == 1 and "replicas" in problems[0], problems


def test_schema_flags_an_unknown_field_and_a_missing_one(objects: list[Obj]) -> None:
    broken = copy.deepcopy(objects)
    _container(broken, "master")["enviroment"] = []
    del _find(broken, "Service", "redis")["spec"]["ports"][0]["port"]
    problems = schema_problems(broken, K8S_VERSIONS[0])
    assert len(problems) == 2, problems
    assert any("enviroment" in p for p in problems) and any("'port' is a required" in p for p in problems)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://redis-cache:6379/0", "no Service redis-cache"),
        ("redis://redis:6380/0", "has no port 6380"),
        ("redis://redis.elsewhere.svc.cluster.local:6379/0", "no Service redis in namespace elsewhere"),
        ("redis://notifier:8765/0", None),  # a real Service and port: wiring cannot tell the kind
    ],
)
def test_wiring_flags_a_url_to_a_missing_service(
    objects: list[Obj], docs: str, url: str, expected: str | None
) -> None:
    broken = copy.deepcopy(objects)
    _find(broken, "ConfigMap", "cachestorm-env")["data"]["CACHESTORM_REDIS_URL"] = url
    problems = wiring_problems(broken, docs)
    if expected is None:
        assert problems == []
    else:
        # Both the master and the worker read the ConfigMap.
        assert len(problems) == 2 and all(expected in p for p in problems), problems


def test_wiring_flags_a_service_that_targets_no_container_port(objects: list[Obj], docs: str) -> None:
    broken = copy.deepcopy(objects)
    _find(broken, "Service", "notifier")["spec"]["ports"][0]["targetPort"] = 9999
    problems = wiring_problems(broken, docs)
    assert problems and all("targets 9999" in p for p in problems), problems


def test_wiring_flags_an_inlined_password(objects: list[Obj], docs: str) -> None:
    broken = copy.deepcopy(objects)
    _env(broken, "worker", "CACHESTORM_PG_DSN")["value"] = (
        "postgresql://postgres:hunter2@postgres:5432/cachestorm"
    )
    problems = wiring_problems(broken, docs)
    assert any("password is written in the manifest" in p for p in problems), problems

    broken = copy.deepcopy(objects)
    _find(broken, "ConfigMap", "cachestorm-env")["data"]["CACHESTORM_PG_DSN"] = (
        "postgresql://u:pw@postgres/db"
    )
    assert any(
        "ConfigMap cachestorm-env: CACHESTORM_PG_DSN holds a password" in p
        for p in wiring_problems(broken, docs)
    )

    broken = copy.deepcopy(objects)
    entry = _env(broken, "postgres", "POSTGRES_PASSWORD")
    del entry["valueFrom"]
    entry["value"] = "cachestorm"
    assert any("POSTGRES_PASSWORD is not taken from a Secret" in p for p in wiring_problems(broken, docs))

    broken = copy.deepcopy(objects)
    _container(broken, "master")["command"] += ["--pg-dsn", "postgresql://postgres:pw@postgres/cachestorm"]
    assert any("on the command line" in p for p in wiring_problems(broken, docs))


def test_wiring_flags_a_secret_used_before_it_is_defined(objects: list[Obj], docs: str) -> None:
    broken = copy.deepcopy(objects)
    _container(broken, "notifier")["env"].reverse()
    problems = wiring_problems(broken, docs)
    assert any("uses $(POSTGRES_PASSWORD) before it is defined" in p for p in problems), problems


def test_wiring_flags_an_undocumented_secret(objects: list[Obj], docs: str) -> None:
    broken = copy.deepcopy(objects)
    _env(broken, "master", "POSTGRES_PASSWORD")["valueFrom"]["secretKeyRef"]["name"] = "pg-secret"
    problems = wiring_problems(broken, docs)
    assert len(problems) == 1 and "pg-secret" in problems[0], problems


def test_wiring_flags_a_worker_unlike_its_master(objects: list[Obj], docs: str) -> None:
    broken = copy.deepcopy(objects)
    _container(broken, "worker")["image"] = "cachestorm:old"
    assert any("worker image" in p for p in wiring_problems(broken, docs))

    broken = copy.deepcopy(objects)
    command = _container(broken, "worker")["command"]
    command[command.index("-f") + 1] = "tests/locustfiles/other.py"
    assert any("worker locustfile" in p for p in wiring_problems(broken, docs))

    broken = copy.deepcopy(objects)
    command = _container(broken, "worker")["command"]
    command[command.index("--master-host") + 1] = "locust-master"
    assert any("no Service locust-master" in p for p in wiring_problems(broken, docs))

    broken = copy.deepcopy(objects)
    command = _container(broken, "master")["command"]
    command[command.index("--master-bind-port") + 1] = "5558"
    assert any("reaches 5557, not 5558" in p for p in wiring_problems(broken, docs))

    broken = copy.deepcopy(objects)
    _container(broken, "worker")["env"].append({"name": "CACHESTORM_STRATEGY", "value": "cache-aside"})
    assert any("differ from the master's" in p for p in wiring_problems(broken, docs))

    broken = copy.deepcopy(objects)
    _container(broken, "worker")["env"].append({"name": "CACHESTORM_STRATEGGY", "value": "cache-aside"})
    assert any("CACHESTORM_STRATEGGY is not a cachestorm option" in p for p in wiring_problems(broken, docs))


def test_wiring_flags_a_public_web_ui(objects: list[Obj], docs: str) -> None:
    broken = copy.deepcopy(objects)
    _find(broken, "Service", "master")["spec"]["type"] = "LoadBalancer"
    assert any("is LoadBalancer" in p for p in wiring_problems(broken, docs))

    broken = copy.deepcopy(objects)
    command = _container(broken, "master")["command"]
    i = command.index("--web-host")
    del command[i : i + 2]
    assert any("--web-host" in p for p in wiring_problems(broken, docs))


def test_docs_show_the_commands_they_name() -> None:
    """The shell lines in the section are well-formed (shlex), so copying them works."""
    section = DOCS.read_text().split("## Kubernetes", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(?:sh|bash|console)?\n(.*?)```", section, re.S)
    assert blocks
    for block in blocks:
        shlex.split(block.replace("\\\n", " "), comments=True)
