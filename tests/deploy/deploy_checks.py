"""Checkers for the deployment files in deploy/: each returns a list of problems (empty: fine).

They take parsed files (or text) rather than paths, so that tests can feed them deliberately
broken copies and see each problem reported. What is "real" comes from stageflow itself: the
setting names from the pydantic settings classes, the CLI flags from the typer app, the
Temporal variables from what ``temporalio.envconfig`` actually reads.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import typer
from pydantic import AliasChoices
from pydantic_settings import BaseSettings
from temporalio.envconfig import ClientConfigProfile

from stageflow.cli.main import app
from stageflow.server.db import DATABASE_URL_ENV
from stageflow.server.settings import CONFIG_ENV, ServerSettings
from stageflow.server.tokens import READ_TOKEN_ENV
from stageflow.settings import (
    DataSettings,
    EngineSettings,
    LogSettings,
    TransferSettings,
    WorkerSettings,
)
from stageflow.transfer.auth import TOKEN_ENV

SETTINGS_CLASSES: tuple[type[BaseSettings], ...] = (
    EngineSettings,
    WorkerSettings,
    TransferSettings,
    DataSettings,
    LogSettings,
    ServerSettings,
)
ENV_NAME = re.compile(r"\b((?:STAGEFLOW|TEMPORAL)_[A-Z0-9_]*)")

# ---------------------------------------------------------------------------- settings names


def settings_env_names() -> set[str]:
    """Every ``STAGEFLOW_*`` variable a stageflow process reads: the settings classes' env names
    (prefix + field name, or the field's aliases, which replace it) and the few variables read
    directly from the environment."""
    names = {TOKEN_ENV, READ_TOKEN_ENV, CONFIG_ENV, DATABASE_URL_ENV}
    for cls in SETTINGS_CLASSES:
        prefix = str(cls.model_config.get("env_prefix", ""))
        for field_name, field in cls.model_fields.items():
            alias = field.validation_alias
            if isinstance(alias, AliasChoices):
                names.update(str(choice).upper() for choice in alias.choices)
            elif isinstance(alias, str):
                names.add(alias.upper())
            else:
                names.add(f"{prefix}{field_name}".upper())
    return names


def worker_defaults() -> tuple[float, float]:
    """(shutdown grace, last log flush) in seconds when nothing overrides them."""
    fields = WorkerSettings.model_fields
    return float(fields["shutdown_grace"].default), float(fields["log_flush_timeout"].default)


@cache
def temporal_env_is_read(name: str, probe_dir: Path) -> bool:
    """Whether ``temporalio.envconfig`` reacts to ``name``: the profile it loads with the
    variable set differs from the one without it (or loading fails, e.g. an unknown profile).
    ``probe_dir`` holds a ``temporal.toml`` for the variables that name a file or profile."""
    toml = probe_dir / "temporal.toml"
    if not toml.exists():
        toml.write_text(
            '[profile.default]\naddress = "from-file:7233"\n'
            '[profile.probe]\naddress = "probe-profile:7233"\n',
            encoding="utf-8",
        )

    def load(env: Mapping[str, str]) -> object:
        try:
            return ClientConfigProfile.load(override_env_vars=dict(env)).to_dict()
        except Exception as exc:
            return f"error: {type(exc).__name__}"

    base = load({})
    values = ["probe.example:7233", "true", str(toml), "probe"]
    return any(load({name: value}) != base for value in values)


def env_name_problems(text: str, source: str, probe_dir: Path) -> list[str]:
    """Each ``STAGEFLOW_*`` / ``TEMPORAL_*`` name in ``text`` must be one stageflow or Temporal
    reads; a name ending in ``_`` is a prefix (``STAGEFLOW_SERVER_*``) some setting must have."""
    known = settings_env_names()
    problems = []
    for name in sorted(set(ENV_NAME.findall(text))):
        if name.startswith("STAGEFLOW_"):
            ok = any(k.startswith(name) for k in known) if name.endswith("_") else name in known
        elif name.endswith("_"):
            ok = name in {"TEMPORAL_", "TEMPORAL_TLS_", "TEMPORAL_GRPC_META_"}
        else:
            ok = temporal_env_is_read(name, probe_dir)
        if not ok:
            problems.append(f"{source}: {name} is not a variable stageflow or Temporal reads")
    return problems


# ---------------------------------------------------------------------------- the CLI


def _click_group() -> Any:
    """The click group behind the typer app (typer ships its own click: duck-typed here)."""
    group = typer.main.get_command(app)
    assert isinstance(getattr(group, "commands", None), dict)
    return group


def command_problems(argv: list[str], source: str) -> list[str]:
    """``argv`` must be ``stageflow <command> ...`` that the real CLI parses (click's own parser,
    without running anything): unknown commands, flags and bad values are reported."""
    if not argv or Path(argv[0]).name != "stageflow":
        return [f"{source}: {argv[:1]} is not the stageflow command"]
    command = _click_group()
    path, rest = ["stageflow"], list(argv[1:])
    while isinstance(getattr(command, "commands", None), dict):
        if not rest or rest[0] not in command.commands:
            return [f"{source}: `{' '.join([*path, *rest[:1]])}` is not a stageflow command"]
        path.append(rest[0])
        command = command.commands[rest.pop(0)]
    try:
        command.make_context(" ".join(path), rest)
    except Exception as exc:  # click's UsageError and friends, from typer's own click
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        return [f"{source}: `{shlex.join(argv)}`: {message}"]
    return []


def worker_queues(argv: list[str]) -> list[str]:
    """The ``--queue`` values of a ``stageflow worker`` command line."""
    ctx = _click_group().commands["worker"].make_context("stageflow worker", list(argv[2:]))
    return list(ctx.params["queue"])


# ---------------------------------------------------------------------------- secrets

_SECRET_KEY = re.compile(
    r"(?<![\w${])([A-Za-z_]*(?:token|password|passwd|pwd|secret|api_key)[A-Za-z_]*)[:=][ \t]*(.*)",
    re.IGNORECASE,
)
_URL_CREDENTIALS = re.compile(r"://[^:/\s@'\"]+:([^@\s'\"]+)@")
_LONG_RANDOM = re.compile(r"(?<![\w/.-])[A-Za-z0-9_\-]{32,}(?![\w/.-])")
_PLACEHOLDERS = {"", '""', "''", "...", "'...'", '"..."', "PASSWORD", "password", "pass"}


def _is_reference(value: str) -> bool:
    word = value.strip().split()[0] if value.strip() else ""
    if word.startswith(("$", '"$', "'$", "{", "<", "|", ">")):
        return True  # interpolation, command substitution, a mapping, a placeholder, a block
    word = word.strip("\"'`;,)}")
    if word in _PLACEHOLDERS or set(word) <= {".", "…"}:
        return True
    return bool(re.fullmatch(r"[A-Z][A-Z0-9_]*", word))  # names the variable that holds it


def _assignment_lines(text: str, markdown: bool) -> set[int]:
    """Lines that may assign values: not comments; in markdown, only inside code blocks."""
    lines, fenced = set(), False
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if markdown and stripped.startswith("```"):
            fenced = not fenced
        elif (fenced or not markdown) and not stripped.startswith("#"):
            lines.add(number)
    return lines


def secret_literal_problems(text: str, source: str) -> list[str]:
    """Literal tokens, passwords or keys: ``NAME=value`` / ``NAME: value`` with a secret-looking
    name and a value that is not empty, a reference or a placeholder (outside comments and, in
    markdown, inside code blocks); passwords inside URLs and long random-looking strings
    anywhere."""
    problems = []
    assigning = _assignment_lines(text, markdown=source.endswith(".md"))
    for number, line in enumerate(text.splitlines(), 1):
        for match in _SECRET_KEY.finditer(line) if number in assigning else ():
            if not _is_reference(match.group(2)):
                problems.append(f"{source}:{number}: {match.group(1)} has a literal value")
        for match in _URL_CREDENTIALS.finditer(line):
            if not _is_reference(match.group(1)):
                problems.append(f"{source}:{number}: a password inside a URL")
        for match in _LONG_RANDOM.finditer(line):
            word = match.group(0)
            if any(c.isdigit() for c in word) and any(c.isalpha() for c in word):
                problems.append(f"{source}:{number}: {word[:8]}… looks like a literal token")
    return problems


# ---------------------------------------------------------------------------- compose

_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def compose_variables(text: str) -> dict[str, str]:
    """``${NAME...}`` uses in a compose file: name → operator (``:?``, ``:-``, or ``""``)."""
    return {m.group(1): m.group(2) or "" for m in _INTERPOLATION.finditer(text)}


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation of ``value`` (defaults and required variables) from ``env``."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        got = env.get(name)
        if op in (":?", "?") and not got:
            raise ValueError(f"required variable {name} is missing a value: {arg}")
        if op in (":-", "-") and not got:
            return arg
        return got or ""

    return _INTERPOLATION.sub(one, value)


def _depends(service: Mapping[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def _seconds(duration: str | int | float) -> float:
    if isinstance(duration, int | float):
        return float(duration)
    if re.fullmatch(r"\d+(?:\.\d+)?", duration.strip()):
        return float(duration)
    total, units = 0.0, {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration):
        total += float(number) * units[unit]
    return total


def compose_problems(doc: Mapping[str, Any], base: Path, env: Mapping[str, str]) -> list[str]:
    """References of a parsed compose file: services depended on exist (and are not only in a
    profile the dependent lacks), with a healthcheck where health is awaited; named volumes,
    secrets, env files, bind mounts and build contexts exist; stageflow commands parse; workers
    get longer than their drain to stop; the ml worker reserves a GPU in a profile."""
    problems: list[str] = []
    services: Mapping[str, Any] = doc.get("services") or {}
    volumes = set((doc.get("volumes") or {}).keys())
    secrets: Mapping[str, Any] = doc.get("secrets") or {}
    grace_default, flush = worker_defaults()
    for name, spec in secrets.items():
        if "file" in (spec or {}) and not (base / interpolate(spec["file"], env)).exists():
            problems.append(f"secret {name}: file {spec['file']} does not exist")
    for name, service in services.items():
        where = f"service {name}"
        profiles = set(service.get("profiles") or [])
        for dep, condition in _depends(service).items():
            if dep not in services:
                problems.append(f"{where}: depends on unknown service {dep}")
                continue
            dep_profiles = set(services[dep].get("profiles") or [])
            if dep_profiles and not dep_profiles & profiles:
                problems.append(f"{where}: depends on {dep}, which only runs in {dep_profiles}")
            if condition == "service_healthy" and "healthcheck" not in services[dep]:
                problems.append(f"{where}: waits for {dep} to be healthy, it has no healthcheck")
        for mount in service.get("volumes") or []:
            source = interpolate(str(mount if isinstance(mount, str) else mount["source"]), env)
            source = source.split(":")[0] if isinstance(mount, str) else source
            if source.startswith((".", "/")):
                if not (base / source).exists():
                    problems.append(f"{where}: bind mount source {source} does not exist")
            elif source not in volumes:
                problems.append(f"{where}: volume {source} is not declared under volumes:")
        for secret in service.get("secrets") or []:
            secret_name = secret if isinstance(secret, str) else secret["source"]
            if secret_name not in secrets:
                problems.append(f"{where}: secret {secret_name} is not declared under secrets:")
        env_files = service.get("env_file") or []
        for entry in [env_files] if isinstance(env_files, str | dict) else env_files:
            path = entry if isinstance(entry, str) else entry["path"]
            required = True if isinstance(entry, str) else entry.get("required", True)
            if required and not (base / path).exists():
                problems.append(f"{where}: env_file {path} does not exist")
        build = service.get("build")
        if build:
            context = base / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile")
            if not context.is_dir() or not (context / (dockerfile or "Dockerfile")).is_file():
                problems.append(f"{where}: build context {context} or its Dockerfile is missing")
        command = service.get("command")
        if command and str(service.get("image", "")).startswith("stageflow"):
            argv = command if isinstance(command, list) else shlex.split(command)
            bad_command = command_problems([str(a) for a in argv], where)
            problems += bad_command
            if argv[1] == "worker" and not bad_command:
                environment = service.get("environment") or {}
                grace = float(environment.get("STAGEFLOW_WORKER_SHUTDOWN_GRACE", grace_default))
                stop = _seconds(service.get("stop_grace_period", "10s"))
                if stop <= grace + flush:
                    problems.append(
                        f"{where}: stop_grace_period {stop:g}s does not cover the drain "
                        f"({grace:g}s) and the last log flush ({flush:g}s)"
                    )
                if "ml" in worker_queues([str(a) for a in argv]):
                    devices = (
                        service.get("deploy", {})
                        .get("resources", {})
                        .get("reservations", {})
                        .get("devices", [])
                    )
                    if not any("gpu" in (d.get("capabilities") or []) for d in devices):
                        problems.append(f"{where}: the ml worker reserves no GPU")
                    if not profiles:
                        problems.append(f"{where}: the GPU worker must be in a profile")
    return problems


def compose_secret_variable_problems(compose_text: str, env_example: str) -> list[str]:
    """Every ``${VAR}`` of the compose file is listed in env.example; every variable env.example
    lists with no value (a secret to fill in) is required (``:?``) wherever compose uses it."""
    listed = dict(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", env_example, re.MULTILINE))
    problems = []
    for name in compose_variables(compose_text):
        if name not in listed:
            problems.append(f"compose uses ${{{name}}}, which env.example does not list")
    for match in _INTERPOLATION.finditer(compose_text):
        name, op = match.group(1), match.group(2) or ""
        if listed.get(name, "x").strip() == "" and op != ":?":
            problems.append(f"compose uses the secret {name} without `:?` (fail when missing)")
    return problems


# ---------------------------------------------------------------------------- kubernetes


def _containers(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(doc["spec"]["template"]["spec"].get("containers") or [])


def k8s_problems(
    docs: Iterable[Mapping[str, Any]], secret_template: Mapping[str, Any]
) -> list[str]:
    """References between manifests: selectors, Service targets, probe ports, Secret and
    ConfigMap keys, volumes and claims, ``$(VAR)`` uses, stageflow command lines, the drain
    inside the grace period, and the ml worker's GPU."""
    docs = [d for d in docs if d]
    problems: list[str] = []
    by_kind: dict[str, dict[str, Mapping[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    secret_name = secret_template["metadata"]["name"]
    secret_keys = set(
        (secret_template.get("stringData") or {}) | (secret_template.get("data") or {})
    )
    configmaps = {name: doc.get("data") or {} for name, doc in by_kind.get("ConfigMap", {}).items()}
    claims = set(by_kind.get("PersistentVolumeClaim", {}))
    grace_default, flush = worker_defaults()
    deployments = by_kind.get("Deployment", {})

    for name, dep in deployments.items():
        where = f"Deployment {name}"
        pod = dep["spec"]["template"]
        labels = pod["metadata"].get("labels") or {}
        selector = dep["spec"]["selector"]["matchLabels"]
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            problems.append(f"{where}: selector {selector} does not match the pod labels {labels}")
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        for volume in volumes.values():
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim and claim not in claims:
                problems.append(f"{where}: claim {claim} is not defined")
        for container in _containers(dep):
            cwhere = f"{where}/{container['name']}"
            ports = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}
            defined: dict[str, str] = {}
            for source in container.get("envFrom") or []:
                ref = (source.get("configMapRef") or {}).get("name")
                if ref and ref not in configmaps:
                    problems.append(f"{cwhere}: ConfigMap {ref} is not defined")
                defined |= {k: str(v) for k, v in configmaps.get(ref, {}).items()}
            for var in container.get("env") or []:
                value = var.get("value")
                if value is not None:
                    for used in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(value)):
                        if used not in defined:
                            problems.append(
                                f"{cwhere}: {var['name']} uses $({used}) before it is set"
                            )
                source = var.get("valueFrom") or {}
                secret = source.get("secretKeyRef")
                if secret:
                    if secret["name"] != secret_name:
                        problems.append(f"{cwhere}: Secret {secret['name']} has no template")
                    elif secret["key"] not in secret_keys and not secret.get("optional"):
                        problems.append(
                            f"{cwhere}: Secret key {secret['key']} is not in the template"
                        )
                cm = source.get("configMapKeyRef")
                if cm and cm["key"] not in configmaps.get(cm["name"], {}):
                    problems.append(f"{cwhere}: ConfigMap key {cm['name']}/{cm['key']} is missing")
                defined[var["name"]] = str(value) if value is not None else "<ref>"
            args = [
                str(a) for a in (container.get("command") or []) + (container.get("args") or [])
            ]
            for used in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", " ".join(args)):
                if used not in defined:
                    problems.append(f"{cwhere}: the command uses $({used}), which is not set")
            for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
                port = ((container.get(probe_name) or {}).get("httpGet") or {}).get("port")
                if port is not None and port not in ports and port not in ports.values():
                    problems.append(f"{cwhere}: {probe_name} port {port} is not a containerPort")
            for mount in container.get("volumeMounts") or []:
                if mount["name"] not in volumes:
                    problems.append(f"{cwhere}: volumeMount {mount['name']} has no volume")
            bad_command = command_problems(args, cwhere) if args else []
            problems += bad_command
            if len(args) > 1 and args[1] == "worker" and not bad_command:
                grace = float(defined.get("STAGEFLOW_WORKER_SHUTDOWN_GRACE", grace_default))
                period = float(pod["spec"].get("terminationGracePeriodSeconds", 30))
                if period <= grace + flush:
                    problems.append(
                        f"{where}: terminationGracePeriodSeconds {period:g} does not cover the "
                        f"drain ({grace:g}s) and the last log flush ({flush:g}s)"
                    )
                if not defined.get("STAGEFLOW_DATA_ADVERTISE", "").startswith("http://$(POD_IP)"):
                    problems.append(f"{cwhere}: STAGEFLOW_DATA_ADVERTISE is not the pod's address")
                if "ml" in worker_queues(args):
                    resources = container.get("resources") or {}
                    for part in ("requests", "limits"):
                        if not (resources.get(part) or {}).get("nvidia.com/gpu"):
                            problems.append(f"{cwhere}: the ml worker {part} no nvidia.com/gpu")

    for name, service in by_kind.get("Service", {}).items():
        selector = service["spec"].get("selector") or {}
        pods = [
            dep
            for dep in deployments.values()
            if selector
            and all(
                (dep["spec"]["template"]["metadata"].get("labels") or {}).get(k) == v
                for k, v in selector.items()
            )
        ]
        if not pods:
            problems.append(f"Service {name}: selector {selector} matches no Deployment's pods")
            continue
        declared = {
            value
            for dep in pods
            for container in _containers(dep)
            for port in container.get("ports") or []
            for value in (port.get("name"), port["containerPort"])
        }
        for port in service["spec"].get("ports") or []:
            target = port.get("targetPort", port["port"])
            if target not in declared:
                problems.append(f"Service {name}: targetPort {target} is no containerPort")
    return problems


# ---------------------------------------------------------------------------- systemd


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """A unit file as section → [(key, value)], keeping repeated keys (Environment=, ...) and
    joining backslash-continued lines."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
        elif "=" in line and current is not None:
            key, value = line.split("=", 1)
            current.append((key.strip(), value.strip()))
        else:
            raise ValueError(f"not a unit file line: {raw!r}")
    return sections


def unit_values(unit: Mapping[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def parse_env_file(text: str) -> dict[str, str]:
    """``KEY=value`` lines (systemd EnvironmentFile / .env), comments skipped."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip().strip("\"'")
    return values


def systemd_problems(
    unit: Mapping[str, list[tuple[str, str]]],
    source: str,
    *,
    instance: str | None = None,
    instance_env: Mapping[str, str] | None = None,
    drop_ins: Iterable[Mapping[str, list[tuple[str, str]]]] = (),
) -> list[str]:
    """A stageflow unit: hardening, restart, SIGTERM, EnvironmentFile, an ExecStart the CLI
    parses (``%i`` as ``instance``, ``$VAR`` from ``instance_env``), and for a worker a stop
    timeout longer than its drain and last log flush."""
    problems = []
    expected = {
        "User": "stageflow",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "KillSignal": "SIGTERM",
        "Restart": "on-failure",
    }
    merged = {section: list(items) for section, items in unit.items()}
    for drop_in in drop_ins:
        for section, items in drop_in.items():
            merged.setdefault(section, []).extend(items)
    for key, value in expected.items():
        got = unit_values(merged, "Service", key)
        if not got or got[-1] != value:
            problems.append(f"{source}: {key}={value} is missing (got {got})")
    if not unit_values(merged, "Service", "EnvironmentFile"):
        problems.append(f"{source}: no EnvironmentFile= for settings and tokens")
    environment = dict(
        item.split("=", 1)
        for value in unit_values(merged, "Service", "Environment")
        for item in shlex.split(value)
    )
    home = environment.get("STAGEFLOW_HOME", "")
    writable = " ".join(unit_values(merged, "Service", "ReadWritePaths")).split()
    if not home or not any(home == w or home.startswith(w.rstrip("/") + "/") for w in writable):
        problems.append(
            f"{source}: the data dir {home or '(STAGEFLOW_HOME unset)'} is not in ReadWritePaths"
        )
    exec_start = unit_values(merged, "Service", "ExecStart")
    if len(exec_start) != 1:
        return [*problems, f"{source}: expected one ExecStart, got {exec_start}"]
    env = dict(instance_env or {})
    line = exec_start[0].replace("%i", instance or "default").replace("%H", "host")
    argv: list[str] = []
    for word in shlex.split(line):
        if re.fullmatch(r"\$[A-Za-z_][A-Za-z0-9_]*", word):
            argv += shlex.split(env.get(word[1:], ""))  # systemd splits $VAR into words
        else:
            argv.append(word)
    bad_command = command_problems(argv, source)
    problems += bad_command
    if len(argv) > 1 and argv[1] == "worker" and not bad_command:
        grace_default, flush = worker_defaults()
        grace = float(env.get("STAGEFLOW_WORKER_SHUTDOWN_GRACE", grace_default))
        timeouts = unit_values(merged, "Service", "TimeoutStopSec")
        stop = _seconds(timeouts[-1]) if timeouts else 90.0
        if stop <= grace + flush:
            problems.append(
                f"{source}: TimeoutStopSec {stop:g}s does not cover the drain ({grace:g}s) "
                f"and the last log flush ({flush:g}s)"
            )
    return problems
