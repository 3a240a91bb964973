"""docker-compose.yml and the Dockerfile, checked without Docker.

Docker cannot run here, so the file is held to its structure (services, health checks,
start-up order), to the settings classes (every variable names a real field and parses),
and, in the end-to-end test, every service command in it is run as a process with the
compose environment, wired the same way (host names mapped to loopback ports).
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from pydantic_settings import BaseSettings

from demo.idp_settings import IdPSettings
from receiver.settings import ReceiverSettings
from transmitter.settings import TransmitterSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
APP_SERVICES: dict[str, type[BaseSettings]] = {
    "idp": IdPSettings,
    "transmitter": TransmitterSettings,
    "receiver": ReceiverSettings,
}
S = TypeVar("S", bound=BaseSettings)
_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's ``${VAR}`` / ``${VAR:-default}`` with an empty environment (the demo defaults)."""
    env = env or {}

    def sub(m: re.Match[str]) -> str:
        if m.group(1) in env:
            return env[m.group(1)]
        if m.group(2) is None:
            raise AssertionError(f"${{{m.group(1)}}} has no default: compose would fail without it")
        return m.group(2)

    return _VAR.sub(sub, value)


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def service_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment must be a mapping"
    return {str(k): interpolate(str(v)) for k, v in env.items()}


def settings_prefix(cls: type[BaseSettings]) -> str:
    prefix = cls.model_config.get("env_prefix")
    assert isinstance(prefix, str) and prefix
    return prefix


def settings_from_env(cls: type[S], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> S:
    prefix = settings_prefix(cls)
    for key in list(os.environ):
        if key.startswith(prefix):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return cls()


#: Compose Specification keys (top level, and the service / health-check keys used here): a typo
#: such as ``depend_on`` or ``healtcheck`` would be silently ignored by YAML, not by compose.
TOP_LEVEL_KEYS = {"version", "name", "include", "services", "networks", "volumes", "secrets", "configs"}
SERVICE_KEYS = {
    "build", "image", "restart", "command", "entrypoint", "environment", "env_file", "ports",
    "depends_on", "healthcheck", "volumes", "networks", "user", "working_dir", "read_only",
}  # fmt: skip
HEALTHCHECK_KEYS = {"test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"}
DEPENDS_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
_DURATION = re.compile(r"^(\d+(ns|us|ms|s|m|h))+$")


def test_keys_are_compose_specification_keys() -> None:
    data = load_compose()
    assert {k for k in data if not k.startswith("x-")} <= TOP_LEVEL_KEYS
    for name, svc in data["services"].items():
        assert re.fullmatch(r"[a-zA-Z0-9._-]+", name)
        assert set(svc) <= SERVICE_KEYS, f"{name}: {set(svc) - SERVICE_KEYS}"
        assert set(svc["healthcheck"]) <= HEALTHCHECK_KEYS, name
        for key in ("interval", "timeout", "start_period"):
            if key in svc["healthcheck"]:
                assert _DURATION.match(svc["healthcheck"][key]), f"{name}: {key}"
        for dep in svc.get("depends_on", {}).values():
            assert dep["condition"] in DEPENDS_CONDITIONS
        for port in svc.get("ports", []):
            assert re.fullmatch(r"\d+:\d+", port), f"{name}: quote ports ({port!r})"
        for key, value in svc.get("environment", {}).items():
            assert isinstance(value, str), f"{name}: {key} must be a string (quote booleans and numbers)"
    for volume in data.get("volumes", {}):
        assert any(
            v.split(":", 1)[0] == volume for svc in data["services"].values() for v in svc.get("volumes", [])
        ), f"volume {volume} is not used"


def test_services_images_and_start_order() -> None:
    data = load_compose()
    services = data["services"]
    assert set(services) == {"postgres", "redis", "idp", "transmitter", "receiver"}
    for name in APP_SERVICES:
        build = services[name]["build"]
        assert build["context"] == "." and (ROOT / build["context"] / build["dockerfile"]) == DOCKERFILE
        assert services[name]["image"] == "ssf-stack:latest"
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")

    # Every service reports health; every dependency waits for it.
    for name, svc in services.items():
        check = svc.get("healthcheck")
        assert check and isinstance(check["test"], list) and check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert check["interval"] and check["retries"] >= 3, name
    expected = {
        "idp": set(),
        "transmitter": {"postgres", "idp"},
        "receiver": {"postgres", "redis", "idp", "transmitter"},
    }
    for name, deps in expected.items():
        depends = services[name].get("depends_on", {})
        assert set(depends) == deps, name
        for dep, spec in depends.items():
            assert spec == {"condition": "service_healthy"}, f"{name} -> {dep}"
            assert dep in services


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_environment_names_match_settings_fields(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cls = APP_SERVICES[name]
    prefix = settings_prefix(cls)
    env = service_env(load_compose()["services"][name])
    assert env, f"{name} sets no {prefix}* variables"
    for key in env:
        assert key.startswith(prefix), f"{name}: {key} does not start with {prefix}"
        field = key[len(prefix) :].lower()
        assert field in cls.model_fields, f"{name}: {key} is not a field of {cls.__name__}"
    # And the values parse, through the same environment path the service uses.
    settings: BaseSettings = settings_from_env(cls, env, monkeypatch)
    for key in env:
        assert getattr(settings, key[len(prefix) :].lower()) is not None


def test_the_services_are_wired_to_each_other(monkeypatch: pytest.MonkeyPatch) -> None:
    services = load_compose()["services"]
    tx, rx, idp = (service_env(services[n]) for n in ("transmitter", "receiver", "idp"))
    t = settings_from_env(TransmitterSettings, tx, monkeypatch)
    i = settings_from_env(IdPSettings, idp, monkeypatch)
    assert t.database_url.startswith("postgresql+psycopg://ssf:") and t.dev_mode
    assert t.allowed_push_destinations == ["receiver"]
    # The receiver subscribes to this transmitter and pushes arrive at its own service name.
    assert rx["SSF_RECEIVER_TRANSMITTER_ISSUER"] == t.issuer == "http://transmitter:8080"
    assert rx["SSF_RECEIVER_PUSH_URL"] == "http://receiver:8081/ssf/push"
    assert rx["SSF_RECEIVER_REDIS_URL"] == "redis://redis:6379/0"
    assert rx["SSF_RECEIVER_DATABASE_URL"].startswith("postgresql://ssf:")
    # Users' tokens: issued by the IdP for the API the receiver protects.
    assert rx["SSF_RECEIVER_TOKEN_ISSUER"] == i.issuer == "http://idp:9000"
    assert rx["SSF_RECEIVER_TOKEN_JWKS_URL"] == f"{i.issuer}/jwks.json"
    assert rx["SSF_RECEIVER_TOKEN_AUDIENCE"] == i.audience
    # Management and publish tokens: the IdP is the transmitter's external authorization server.
    assert (t.external_issuer, t.external_jwks_url) == (i.issuer, f"{i.issuer}/jwks.json")
    clients = {c.client_id: c for c in i.clients()}
    receiver_client = clients[rx["SSF_RECEIVER_CLIENT_ID"]]
    assert receiver_client.secret == rx["SSF_RECEIVER_CLIENT_SECRET"]
    assert set(receiver_client.scopes) == {"ssf.read", "ssf.manage"}
    assert rx["SSF_RECEIVER_TOKEN_ENDPOINT"] == f"{i.issuer}/oauth/token"
    assert i.publisher_client_id is not None and i.publisher_client_secret is not None
    publisher = clients[i.publisher_client_id]
    assert publisher.secret == i.publisher_client_secret.get_secret_value()
    assert publisher.scopes == ("ssf.publish",)
    assert {c.audience for c in clients.values()} == {t.external_audience}
    assert i.transmitter_url == t.issuer


def _port_arg(command: list[str]) -> str:
    return command[command.index("--port") + 1]


def test_commands_ports_and_health_checks_agree() -> None:
    services = load_compose()["services"]
    for name in APP_SERVICES:
        svc = services[name]
        command = svc["command"]
        assert isinstance(command, list), f"{name}: use the exec form"
        port = _port_arg(command)
        assert command[command.index("--host") + 1] == "0.0.0.0"
        assert svc["ports"] == [f"{port}:{port}"]
        url = svc["healthcheck"]["test"][-1]
        assert url.startswith(f"http://127.0.0.1:{port}/"), name
    # Readiness, not just liveness: the transmitter's /readyz checks its database and push worker,
    # the receiver's /health its stream; the identity provider is ready once it serves its keys.
    checks = {name: services[name]["healthcheck"]["test"][-1].split("/", 3)[-1] for name in APP_SERVICES}
    assert checks == {"transmitter": "readyz", "receiver": "health", "idp": "jwks.json"}
    assert services["transmitter"]["command"][:3] == ["ssf", "transmitter", "serve"]
    assert services["receiver"]["command"][:3] == ["ssf", "receiver", "serve"]
    assert services["idp"]["command"][:3] == ["python", "-m", "demo.idp_serve"]


def test_dockerfile_installs_every_package_as_non_root() -> None:
    text = DOCKERFILE.read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"useradd .*--uid 10001 .*\bssf\b", text)
    assert "pip install ." in text
    copied = {line.split()[1] for line in lines if line.startswith("COPY ")}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied, f"not copied into the image: {packages - copied}"
    assert {"pyproject.toml", pyproject["project"]["readme"]} <= set(
        next(line for line in lines if line.startswith("COPY pyproject.toml")).split()[1:-1]
    )
    for source in copied - {"pyproject.toml"}:
        assert (ROOT / source).exists(), source
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def test_the_image_gets_every_runtime_file() -> None:
    """``pip install .`` in the Dockerfile ships packages plus their package-data globs only.

    A template, JSON file or other data file that no glob picks up would be missing from the
    image (and from any wheel) while every test run from the source tree still passes.
    """
    from setuptools import find_packages  # type: ignore[import-untyped]

    setuptools_cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = find_packages(where=str(ROOT), include=setuptools_cfg["packages"]["find"]["include"])
    globs: list[str] = setuptools_cfg.get("package-data", {}).get("*", [])
    shipped: set[Path] = set()
    for package in packages:
        folder = ROOT / package.replace(".", "/")
        shipped |= {p for p in folder.glob("*.py")}
        for pattern in globs:
            shipped |= {p for p in folder.glob(pattern) if p.is_file()}
    tops = sorted({p.split(".")[0] for p in packages})
    # The committed files (a scratch file in someone's working tree is not part of the product).
    listed = subprocess.run(["git", "ls-files", "--", *tops], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode == 0 and listed.stdout.strip():
        files = [ROOT / line for line in listed.stdout.splitlines() if (ROOT / line).is_file()]
    else:  # not a git checkout (e.g. an unpacked sdist)
        files = [p for top in tops for p in (ROOT / top).rglob("*") if p.is_file()]
    missing = [
        str(path.relative_to(ROOT))
        for path in files
        if path.suffix not in (".pyc", ".md") and "__pycache__" not in path.parts and path not in shipped
    ]
    assert not missing, (
        f"not installed by `pip install .` (so not in the image): {sorted(missing)}; add a package-data "
        "glob in pyproject.toml, or an __init__.py to make the folder a package"
    )
