"""The deployment files in deploy/ parse, reference only what exists, and hold no secrets.

Each check runs on the real files and, for the reference checks, on a deliberately broken copy
that it must reject. External validators (`docker compose config`, `systemd-analyze verify`,
`kubectl kustomize`) run when their tool is installed and skip with the reason otherwise.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_checks import (
    command_problems,
    compose_problems,
    compose_secret_variable_problems,
    env_name_problems,
    interpolate,
    k8s_problems,
    parse_env_file,
    parse_unit,
    secret_literal_problems,
    settings_env_names,
    systemd_problems,
    temporal_env_is_read,
)
from temporalio.envconfig import ClientConfig

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"
OPERATIONS = REPO / "docs" / "operations.md"
STAGEFLOW_BIN = Path(sys.executable).parent / "stageflow"
SECRETS = (
    "STAGEFLOW_TOKEN",
    "STAGEFLOW_SERVER_READ_TOKEN",
    "POSTGRES_PASSWORD",
    "CONTROL_DB_PASSWORD",
)


def deploy_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file())


def compose_doc() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))


def k8s_docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name not in ("kustomization.yaml", "secret.yaml"):
            docs += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    return docs


def secret_template() -> dict[str, Any]:
    return yaml.safe_load((K8S / "secret.yaml").read_text(encoding="utf-8"))


def fresh_env() -> dict[str, str]:
    """What an operator's deploy/.env holds: a fresh value for every secret."""
    return {name: os.urandom(16).hex() for name in (*SECRETS, "LLM_API_KEY")}


# ---------------------------------------------------------------------------- every file


def test_every_yaml_file_parses() -> None:
    yamls = [p for p in deploy_files() if p.suffix in (".yaml", ".yml")]
    assert len(yamls) >= 8
    for path in yamls:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
        assert docs, f"{path} holds no YAML document"
        for doc in docs:
            assert isinstance(doc, dict), path


def test_every_setting_named_is_real(tmp_path: Path) -> None:
    texts = {p: p.read_text(encoding="utf-8") for p in [*deploy_files(), OPERATIONS]}
    problems = [
        problem
        for path, text in texts.items()
        for problem in env_name_problems(text, str(path.relative_to(REPO)), tmp_path)
    ]
    assert problems == []
    # the names really come from the settings classes and from Temporal
    names = settings_env_names()
    assert {"STAGEFLOW_WORKER_SHUTDOWN_GRACE", "STAGEFLOW_SERVER_URL", "STAGEFLOW_TOKEN"} <= names
    assert "STAGEFLOW_WORKER_SERVER_URL" in names and "STAGEFLOW_LOG_FORMAT" in names


def test_unknown_settings_are_rejected(tmp_path: Path) -> None:
    text = (
        "STAGEFLOW_WORKER_SHUTDOWN_GRACE=1\nSTAGEFLOW_WORKER_GRACE=1\nTEMPORAL_ADRESS=x\n"
        "TEMPORAL_TLS_CLIENT_CERT_PATH=/c\nTEMPORAL_PROFILE=p\nTEMPORAL_CONFIG_FILE=/f\n"
        "STAGEFLOW_SERVER_* and STAGEFLOW_NOPE_*\n"
    )
    problems = env_name_problems(text, "x", tmp_path)
    assert problems == [
        "x: STAGEFLOW_NOPE_ is not a variable stageflow or Temporal reads",
        "x: STAGEFLOW_WORKER_GRACE is not a variable stageflow or Temporal reads",
        "x: TEMPORAL_ADRESS is not a variable stageflow or Temporal reads",
    ]
    assert temporal_env_is_read("TEMPORAL_API_KEY", tmp_path)
    assert not temporal_env_is_read("TEMPORAL_APIKEY", tmp_path)


def test_no_secret_values_in_any_file() -> None:
    problems = [
        problem
        for path in [*deploy_files(), OPERATIONS]
        for problem in secret_literal_problems(
            path.read_text(encoding="utf-8"), str(path.relative_to(REPO))
        )
    ]
    assert problems == []


def test_the_secret_scan_finds_literal_secrets() -> None:
    token = os.urandom(24).hex()
    bad = (
        f"STAGEFLOW_TOKEN={token}\n"
        "      POSTGRES_PASSWORD: temporal\n"
        "url: postgresql://stageflow:hunter22@db:5432/stageflow\n"
        f"  something: {token}\n"
        "api_key: sk-live\n"
    )
    assert [p.split(": ", 1)[0] for p in secret_literal_problems(bad, "f")] == [
        "f:1",
        "f:1",
        "f:2",
        "f:3",
        "f:4",
        "f:5",
    ]
    fine = (
        "STAGEFLOW_TOKEN=\nPOSTGRES_PWD: ${POSTGRES_PASSWORD:?set it}\n"
        'STAGEFLOW_TOKEN: ""\napi_key_env: LLM_API_KEY\n'
        "secretKeyRef: {name: s, key: STAGEFLOW_TOKEN}\n"
        "postgresql://stageflow:${CONTROL_DB_PASSWORD:?x}@postgres/stageflow\n"
    )
    assert secret_literal_problems(fine, "f") == []


def test_the_dockerfile_runs_as_non_root_with_a_healthcheck() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim$", text, re.MULTILINE)
    assert re.search(r"^ARG EXTRAS=\S+", text, re.MULTILINE)
    assert '".[${EXTRAS}]"' in text
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK ", text, re.MULTILINE)
    assert "HEALTHCHECK_URL=http://127.0.0.1:8700/healthz" in text
    assert not re.search(r"^(ENV|ARG) .*(TOKEN|PASSWORD|KEY)", text, re.MULTILINE)


# ---------------------------------------------------------------------------- compose


def test_compose_references_exist() -> None:
    assert compose_problems(compose_doc(), DEPLOY, fresh_env()) == []


def test_compose_secrets_come_from_env_and_are_required() -> None:
    text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    example = (DEPLOY / "env.example").read_text(encoding="utf-8")
    assert compose_secret_variable_problems(text, example) == []
    for name in (*SECRETS, "LLM_API_KEY"):
        assert parse_env_file(example).get(name) == "", f"{name} must be listed, empty"
        with pytest.raises(ValueError, match=name):
            interpolate(text, {k: v for k, v in fresh_env().items() if k != name})
    interpolate(text, fresh_env())  # complete: no error


def test_the_env_example_one_liner_makes_a_complete_env(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl on this machine")
    example = (DEPLOY / "env.example").read_text(encoding="utf-8")
    line = next(ln for ln in example.splitlines() if "openssl rand" in ln).lstrip("# ")
    (tmp_path / "deploy").mkdir()
    subprocess.run(["sh", "-c", line], cwd=tmp_path, check=True)
    made = tmp_path / "deploy" / ".env"
    assert made.stat().st_mode & 0o077 == 0
    values = parse_env_file(made.read_text(encoding="utf-8"))
    assert all(len(values[name]) == 64 for name in SECRETS)
    assert len(set(values[name] for name in SECRETS)) == len(SECRETS)


def test_compose_checker_rejects_broken_copies() -> None:
    def broken(edit: Any) -> list[str]:
        doc = copy.deepcopy(compose_doc())
        edit(doc["services"], doc)
        return compose_problems(doc, DEPLOY, fresh_env())

    cases = {
        "unknown service": lambda s, d: s["server"]["depends_on"].update(redis={}),
        "only runs in": lambda s, d: s["server"].update(depends_on={"temporal-ui": {}}),
        "no healthcheck": lambda s, d: (
            s["temporal"].update(
                depends_on={"temporal-ui": {"condition": "service_healthy"}}, profiles=["ui"]
            )
            or s["temporal-ui"].pop("healthcheck", None)
            or s["worker-api"].update(depends_on={"temporal": {"condition": "service_healthy"}})
        ),
        "is not declared under volumes": lambda s, d: d["volumes"].pop("server-data"),
        "bind mount source": lambda s, d: s["postgres"]["volumes"].append("./nope.sh:/x.sh:ro"),
        "is not declared under secrets": lambda s, d: s["server"].update(secrets=["db"]),
        "env_file": lambda s, d: s["server"].update(env_file=["missing.env"]),
        "No such option": lambda s, d: s["worker-default"]["command"].append("--queues"),
        "not a stageflow command": lambda s, d: s["server"].update(command=["stageflow", "serve"]),
        "stop_grace_period": lambda s, d: s["worker-ml"].update(stop_grace_period="60s"),
        "reserves no GPU": lambda s, d: s["worker-ml"].pop("deploy"),
        "must be in a profile": lambda s, d: s["worker-ml"].pop("profiles"),
        "build context": lambda s, d: s["server"].update(build={"context": "../nowhere"}),
    }
    for message, edit in cases.items():
        problems = broken(edit)
        assert any(message in p for p in problems), (message, problems)
    text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    example = (DEPLOY / "env.example").read_text(encoding="utf-8")
    assert compose_secret_variable_problems(
        text.replace("${STAGEFLOW_TOKEN:?", "${STAGEFLOW_TOKEN:-"), example
    ) == ["compose uses the secret STAGEFLOW_TOKEN without `:?` (fail when missing)"]
    assert compose_secret_variable_problems(text + "\n# ${NEW_SECRET:?x}\n", example) == [
        "compose uses ${NEW_SECRET}, which env.example does not list"
    ]


def _docker_compose() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.mark.parametrize("profile", [None, "gpu"])
def test_docker_compose_config(tmp_path: Path, profile: str | None) -> None:
    tool = _docker_compose()
    if tool is None:
        pytest.skip("no docker CLI with the compose plugin on this machine")
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    env_text = "".join(f"{k}={v}\n" for k, v in fresh_env().items())
    (tmp_path / "deploy" / ".env").write_text(env_text, encoding="utf-8")
    args = [*tool, *(["--profile", profile] if profile else []), "config", "--quiet"]
    done = subprocess.run(
        args, cwd=tmp_path / "deploy", capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    (tmp_path / "deploy" / ".env").write_text("", encoding="utf-8")
    missing = subprocess.run(
        args, cwd=tmp_path / "deploy", capture_output=True, text=True, check=False
    )
    assert missing.returncode != 0 and "deploy/.env" in missing.stderr


# ---------------------------------------------------------------------------- kubernetes


def test_k8s_references_hold() -> None:
    docs = k8s_docs()
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == ["ConfigMap", "Deployment", "Namespace", "PersistentVolumeClaim", "Service"]
    assert k8s_problems(docs, secret_template()) == []
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == {
        "stageflow-server",
        "stageflow-worker-default",
        "stageflow-worker-ml",
        "stageflow-worker-api",
    }
    server = deployments["stageflow-server"]["spec"]
    assert server["replicas"] == 1 and server["strategy"]["type"] == "Recreate"
    probes = server["template"]["spec"]["containers"][0]
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_k8s_secret_template_is_empty_and_kustomization_lists_the_rest() -> None:
    template = secret_template()
    assert template["kind"] == "Secret"
    assert all(value == "" for value in template["stringData"].values())
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.yaml"}
    assert listed == on_disk
    assert "secret.yaml" not in listed  # created by the operator with real values


def test_k8s_checker_rejects_broken_copies() -> None:
    def broken(edit: Any, secret: dict[str, Any] | None = None) -> list[str]:
        docs = copy.deepcopy(k8s_docs())
        named = {(d["kind"], d["metadata"]["name"]): d for d in docs}
        edit(named)
        return k8s_problems(docs, secret or secret_template())

    def container(named: dict[Any, Any], name: str) -> dict[str, Any]:
        return named[("Deployment", name)]["spec"]["template"]["spec"]["containers"][0]

    def pod(named: dict[Any, Any], name: str) -> dict[str, Any]:
        return named[("Deployment", name)]["spec"]["template"]

    cases = {
        "does not match the pod labels": lambda n: pod(n, "stageflow-worker-ml")["metadata"][
            "labels"
        ].update({"stageflow.io/queue": "gpu"}),
        "matches no Deployment": lambda n: n[("Service", "stageflow-server")]["spec"][
            "selector"
        ].update(app="other"),
        "targetPort web": lambda n: n[("Service", "stageflow-server")]["spec"]["ports"][0].update(
            targetPort="web"
        ),
        "readinessProbe port": lambda n: container(n, "stageflow-worker-api")["readinessProbe"][
            "httpGet"
        ].update(port="http"),
        "not in the template": lambda n: container(n, "stageflow-server")["env"].append(
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "stageflow-secrets", "key": "X"}}}
        ),
        "has no template": lambda n: container(n, "stageflow-server")["env"].append(
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "other", "key": "X"}}}
        ),
        "ConfigMap key": lambda n: container(n, "stageflow-server")["env"].append(
            {
                "name": "X",
                "valueFrom": {"configMapKeyRef": {"name": "stageflow-config", "key": "X"}},
            }
        ),
        "ConfigMap nope": lambda n: container(n, "stageflow-server")["envFrom"].append(
            {"configMapRef": {"name": "nope"}}
        ),
        "claim other-data": lambda n: pod(n, "stageflow-server")["spec"]["volumes"][0][
            "persistentVolumeClaim"
        ].update(claimName="other-data"),
        "has no volume": lambda n: pod(n, "stageflow-worker-default")["spec"].update(volumes=[]),
        "before it is set": lambda n: container(n, "stageflow-worker-default")["env"].reverse(),
        "No such option": lambda n: container(n, "stageflow-worker-api")["args"].append("--gpu"),
        "terminationGracePeriodSeconds": lambda n: pod(n, "stageflow-worker-ml")["spec"].update(
            terminationGracePeriodSeconds=300
        ),
        "limits no nvidia.com/gpu": lambda n: container(n, "stageflow-worker-ml")["resources"][
            "limits"
        ].pop("nvidia.com/gpu"),
        "not the pod's address": lambda n: container(n, "stageflow-worker-default")["env"][
            2
        ].update(value="http://worker:8765"),
    }
    for message, edit in cases.items():
        problems = broken(edit)
        assert any(message in p for p in problems), (message, problems)


def test_kubectl_kustomize_builds() -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("no kubectl on this machine")
    done = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert len(docs) == len(k8s_docs())
    assert all(
        d["metadata"].get("namespace") == "stageflow" for d in docs if d["kind"] != "Namespace"
    )
    assert k8s_problems(docs, secret_template()) == []


# ---------------------------------------------------------------------------- systemd


def _worker_env(queue: str) -> dict[str, str]:
    path = SYSTEMD / f"worker-{queue}.env.example"
    return parse_env_file(path.read_text(encoding="utf-8")) if path.exists() else {}


def _drop_ins(queue: str) -> list[dict[str, list[tuple[str, str]]]]:
    folder = SYSTEMD / f"stageflow-worker@{queue}.service.d"
    return [parse_unit(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.conf"))]


def test_systemd_units_hold() -> None:
    server = parse_unit((SYSTEMD / "stageflow-server.service").read_text(encoding="utf-8"))
    assert systemd_problems(server, "stageflow-server.service") == []
    template = parse_unit((SYSTEMD / "stageflow-worker@.service").read_text(encoding="utf-8"))
    queues = sorted(
        p.name[len("worker-") : -len(".env.example")] for p in SYSTEMD.glob("worker-*.env.example")
    )
    assert queues == ["api", "default", "ml"]
    for queue in queues:
        assert (
            systemd_problems(
                template,
                f"stageflow-worker@{queue}",
                instance=queue,
                instance_env=_worker_env(queue),
                drop_ins=_drop_ins(queue),
            )
            == []
        )


def test_systemd_checker_rejects_broken_copies() -> None:
    text = (SYSTEMD / "stageflow-worker@.service").read_text(encoding="utf-8")
    ml = {"instance": "ml", "instance_env": _worker_env("ml")}
    cases = {
        "TimeoutStopSec 330s does not cover": (
            text,
            {**ml, "instance_env": {**_worker_env("ml"), "STAGEFLOW_WORKER_SHUTDOWN_GRACE": "600"}},
        ),
        "TimeoutStopSec 60s does not cover": (text, ml),  # without the ml drop-in
        "No such option": (text.replace("--queue %i", "--queue %i --gpus 1"), {}),
        "ProtectSystem=strict": (text.replace("ProtectSystem=strict", "ProtectSystem=full"), {}),
        "KillSignal=SIGTERM": (text.replace("KillSignal=SIGTERM", "KillSignal=SIGKILL"), {}),
        "ReadWritePaths": (
            text.replace("ReadWritePaths=/var/lib/stageflow", "ReadWritePaths=/srv"),
            {},
        ),
        "EnvironmentFile": (re.sub(r"^EnvironmentFile=.*$", "", text, flags=re.MULTILINE), {}),
        "not a stageflow command": (text.replace("stageflow worker", "stageflow wrker"), {}),
    }
    for message, (unit_text, kwargs) in cases.items():
        drop_ins = _drop_ins("ml") if message.startswith("TimeoutStopSec 330") else []
        problems = systemd_problems(parse_unit(unit_text), "u", drop_ins=drop_ins, **kwargs)
        assert any(message in p for p in problems), (message, problems)


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("no systemd-analyze on this machine")
    if not STAGEFLOW_BIN.exists():
        pytest.skip(f"no stageflow executable at {STAGEFLOW_BIN}")
    # The units name the install path /opt/stageflow/venv; verify checks that ExecStart exists,
    # so point it at this environment's stageflow.
    for path in ("stageflow-server.service", "stageflow-worker@.service"):
        text = (SYSTEMD / path).read_text(encoding="utf-8")
        (tmp_path / path).write_text(
            text.replace("/opt/stageflow/venv/bin/stageflow", str(STAGEFLOW_BIN)), encoding="utf-8"
        )
    shutil.copy(tmp_path / "stageflow-worker@.service", tmp_path / "stageflow-worker@ml.service")
    units = [
        str(tmp_path / "stageflow-server.service"),
        str(tmp_path / "stageflow-worker@ml.service"),
    ]
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *units],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and "stageflow" not in done.stderr, done.stderr
    # and verify does reject a broken unit
    broken = tmp_path / "broken.service"
    broken.write_text(
        (tmp_path / "stageflow-server.service")
        .read_text()
        .replace(str(STAGEFLOW_BIN), "/nonexistent/stageflow"),
        encoding="utf-8",
    )
    assert (
        subprocess.run(
            ["systemd-analyze", "verify", "--man=no", str(broken)], capture_output=True, check=False
        ).returncode
        != 0
    )


# ---------------------------------------------------------------------------- Temporal, docs


def test_temporal_examples_are_what_envconfig_reads(tmp_path: Path) -> None:
    config = ClientConfig.load(config_source=DEPLOY / "temporal.toml.example")
    prod = config.profiles["prod"].to_dict()
    assert prod["address"] and {"client_cert", "client_key", "server_ca_cert"} <= set(prod["tls"])
    cloud = config.profiles["cloud"]
    assert cloud.tls is not None and cloud.tls.disabled is False
    example = parse_env_file((DEPLOY / "temporal-cloud.env.example").read_text(encoding="utf-8"))
    assert {"TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_API_KEY"} <= set(example)
    assert all(temporal_env_is_read(name, tmp_path) for name in example)


def test_operations_doc_covers_the_deployment() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    for heading in (
        "## Deploying",
        "## A production Temporal",
        "## Tokens and passwords",
        "## Where data lives and backups",
        "## Upgrades",
        "## Monitoring",
        "## Disk",
        "## Faults and recovery",
    ):
        assert heading in text, heading
    faults = text.split("## Faults and recovery", 1)[1]
    assert "TO BE MEASURED" not in faults  # the chaos suite's figures are in
    assert re.search(r"\| worker SIGKILLed mid-stage \| \d+/\d+ \| 0/0 \| [\d.]+ s \|", faults)
    assert re.search(r"\|\s*fault\s*\|\s*runs completed\s*\|", faults)
    assert "stageflow:latest" in text
    for name in ("compose.yaml", "k8s/", "stageflow-worker@.service", "temporal-cloud.env.example"):
        assert name in text, name


def test_doc_command_lines_parse() -> None:
    """Every `stageflow ...` command shown in a code block of the docs is one the CLI takes."""
    text = OPERATIONS.read_text(encoding="utf-8")
    blocks = re.findall(r"```(?:sh|bash)\n(.*?)```", text, re.DOTALL)
    commands = [
        line.strip()
        for block in blocks
        for line in block.replace("\\\n", " ").splitlines()
        if line.strip().startswith("stageflow ")
    ]
    assert commands
    for line in commands:
        argv = [w for w in __import__("shlex").split(line.split(" #")[0])]
        assert command_problems(argv, line) == []
