"""docker-compose.yml and the Dockerfile agree with the settings they deploy."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
WORKERS = ("worker", "worker-scoring", "worker-sms", "worker-email", "worker-crm-realtime")
APP_SERVICES = ("migrate", "web", *WORKERS, "beat")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _command(service: dict) -> list[str]:
    command = service["command"]
    return command if isinstance(command, list) else command.split()


def test_stack_has_every_service_and_one_image(compose):
    services = compose["services"]

    assert {"postgres", "redis", *APP_SERVICES} <= set(services)
    builds = {repr(services[name]["build"]) for name in APP_SERVICES}
    images = {services[name]["image"] for name in APP_SERVICES}
    assert builds == {repr({"context": "."})}
    assert len(images) == 1


def test_long_running_services_have_healthchecks(compose):
    for name, service in compose["services"].items():
        if name != "migrate":
            assert service["healthcheck"]["test"], name


def test_app_services_wait_for_migrations_and_healthy_servers(compose):
    services = compose["services"]
    assert _command(services["migrate"])[-3:] == ["manage.py", "migrate", "--noinput"]
    for name in ("web", *WORKERS, "beat"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"


def test_workers_per_queue_cover_every_queue_once_and_beat_uses_the_database_scheduler(compose):
    services = compose["services"]
    queues = []
    for name in WORKERS:
        worker = _command(services[name])
        assert worker[:4] == ["celery", "-A", "config", "worker"], name
        queues += worker[worker.index("-Q") + 1].split(",")
        # senders hold one task per process: a slow provider never sits on prefetched work
        if {"sms", "email", "crm", "realtime"} & set(worker[worker.index("-Q") + 1].split(",")):
            assert worker[worker.index("--prefetch-multiplier") + 1] == "1", name
    assert sorted(queues) == sorted(settings.CELERY_QUEUE_NAMES)
    beats = [n for n, s in services.items() if "command" in s and "beat" in _command(s)[:4]]
    assert beats == ["beat"]

    beat = _command(services["beat"])
    assert beat[:4] == ["celery", "-A", "config", "beat"]
    assert beat[beat.index("-S") + 1] == "django_celery_beat.schedulers:DatabaseScheduler"
    assert "deploy" not in services["beat"] or services["beat"]["deploy"].get("replicas", 1) == 1

    web = _command(services["web"])
    assert web[0] == "daphne" and web[-1] == "config.asgi:application"


def test_every_variable_production_requires_is_provided(compose):
    # env("NAME") / env.list("NAME") with no default: production refuses to start without it.
    production = (ROOT / "config/settings/production.py").read_text()
    required = set(re.findall(r'env(?:\.\w+)?\(\s*"([A-Z0-9_]+)"\s*\)', production))
    assert required, "expected production settings to require some variables"
    for name in APP_SERVICES:
        environment = compose["services"][name]["environment"]
        assert environment["DJANGO_SETTINGS_MODULE"] == "config.settings.production"
        assert required <= set(environment), (name, required - set(environment))


def test_dockerfile_builds_from_python_311_with_the_lock_as_constraints():
    dockerfile = (ROOT / "Dockerfile").read_text()

    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    assert "pip install -r requirements.in -c requirements.lock" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".data", ".git"} <= set(ignored)


def _compose_cli() -> list[str] | None:
    for cli in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cli[0]) is None:
            continue
        probe = subprocess.run([*cli, "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return cli
    return None


@pytest.mark.skipif(_compose_cli() is None, reason="no docker compose CLI on this machine")
def test_docker_compose_accepts_the_file():
    result = subprocess.run(
        [*_compose_cli(), "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        env={
            "DJANGO_SECRET_KEY": "x",
            "GHL_WEBHOOK_ED25519_PUBLIC_KEY": "x",
            "PATH": "/usr/bin:/bin:/usr/local/bin",
        },
    )
    assert result.returncode == 0, result.stderr


def _interpolate(value: str, given: dict[str, str]) -> str:
    """Compose's ${VAR:-default} / ${VAR:?message} with `given` as the .env file."""

    def one(match: re.Match) -> str:
        name, op, rest = match.group(1), match.group(2), match.group(3)
        if name in given:
            return given[name]
        assert op == ":-", f"{name} is required by docker-compose.yml"
        return rest

    return re.sub(r"\$\{([A-Z0-9_]+)(:[-?])?([^}]*)\}", one, str(value))


def test_production_settings_start_with_the_compose_environment(compose, tmp_path):
    # given: the web service's environment, with a .env holding the two secrets
    dotenv = {"DJANGO_SECRET_KEY": "compose-test-secret", "GHL_WEBHOOK_ED25519_PUBLIC_KEY": "k"}
    environment = {
        key: _interpolate(value, dotenv)
        for key, value in compose["services"]["web"]["environment"].items()
    }
    # the container's tmpfs for multiprocess metrics, here a temporary directory
    environment["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    env = {"PATH": os.environ["PATH"], **environment}

    # when: Django loads production settings and runs its system checks
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--fail-level", "ERROR"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )

    # then
    assert result.returncode == 0, result.stderr
