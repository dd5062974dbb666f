"""docker-compose.yaml and docker/Dockerfile, checked without a Docker engine.

Debian's ``docker-compose`` (1.29, package docker-compose) validates the file against the
compose specification's JSON schema it ships and resolves anchors, merges and the env file;
the normalised configuration it prints is then checked for what a scaled deployment needs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
COMPOSE = shutil.which("docker-compose")
INSTALL = (
    "validating docker-compose.yaml needs `apt-get install -y docker-compose` (make test does)"
)
AIRFLOW = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
KEY = "5f" * 32


def _checkout(directory: Path) -> Path:
    """The compose file and docker/ as in a fresh checkout (no docker/drillkit.env yet)."""
    if COMPOSE is None:
        pytest.fail(INSTALL)
    shutil.copy(REPO / "docker-compose.yaml", directory)
    shutil.copytree(REPO / "docker", directory / "docker")
    (directory / "docker" / "drillkit.env").unlink(missing_ok=True)
    (directory / "dags").mkdir()
    return directory


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkout(tmp_path_factory.mktemp("compose"))


def _fill_env_file(project: Path) -> None:
    example = (project / "docker" / "drillkit.env.example").read_text()
    filled = example.replace("CHANGE-ME-SIGNING", KEY).replace("CHANGE-ME-JWT", "ab" * 32)
    (project / "docker" / "drillkit.env").write_text(filled)


def _compose(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert COMPOSE is not None
    files = ["--project-directory", str(project), "-f", str(project / "docker-compose.yaml")]
    return subprocess.run(
        [COMPOSE, *files, *args],
        capture_output=True,
        text=True,
        cwd=project,
        timeout=60,
    )


@pytest.fixture(scope="module")
def config(project: Path) -> dict[str, Any]:
    """The normalised configuration, once docker/drillkit.env was filled in as documented."""
    _fill_env_file(project)
    checked = _compose(project, "config", "-q")
    assert checked.returncode == 0, checked.stderr
    rendered = _compose(project, "config")
    assert rendered.returncode == 0, rendered.stderr
    return dict(yaml.safe_load(rendered.stdout))


def _targets(service: dict[str, Any]) -> dict[str, str]:
    """Mount target -> source of a normalised service."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        mounts[target] = source
    return mounts


def test_the_deployment_has_every_service_with_a_healthcheck(config):
    services = config["services"]
    expected = {"postgres", "redis", "airflow-init", "airflow-worker", "drill-sandboxes", *AIRFLOW}
    assert set(services) == expected
    for name in expected - {"airflow-init"}:
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for name in (*AIRFLOW, "airflow-worker"):
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert re.match(r"redis://(:@)?redis:6379/", env["AIRFLOW__CELERY__BROKER_URL"])
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert "@postgres/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
        depends = services[name]["depends_on"]
        assert depends["airflow-init"]["condition"] == "service_completed_successfully"
        assert depends["postgres"]["condition"] == "service_healthy"
    assert services["airflow-init"]["command"] == ["db", "migrate"]


def test_workers_scale_and_share_their_sandboxes(config):
    worker = config["services"]["airflow-worker"]
    # `docker compose up --scale airflow-worker=3` needs no fixed name and no host port.
    assert "container_name" not in worker
    assert "ports" not in worker
    assert worker["command"] == "celery worker"
    assert worker["environment"]["DUMB_INIT_SETSID"] == "0"
    mounts = _targets(worker)
    assert mounts["/opt/airflow/sandboxes"] == "drill-sandboxes"
    assert mounts["/srv/backups"].endswith("backups")
    assert any(v.startswith(f"{mounts['/srv/backups']}:/srv/backups:ro") for v in worker["volumes"])
    # A drill's tasks may land on different workers: one process namespace for all of them.
    assert worker["pid"] == "service:drill-sandboxes"
    assert _targets(config["services"]["drill-sandboxes"])["/opt/airflow/sandboxes"] == (
        "drill-sandboxes"
    )
    assert {"drill-sandboxes", "drillkit-state", "airflow-logs"} <= set(config["volumes"])


def test_dags_are_mounted_and_plugins_are_not(config, project):
    for name in (*AIRFLOW, "airflow-worker"):
        mounts = _targets(config["services"][name])
        assert mounts["/opt/airflow/dags"] == str(project / "dags"), name
        assert "/opt/airflow/plugins" not in mounts, f"{name}: the entry point loads the plugin"
        assert "AIRFLOW__CORE__PLUGINS_FOLDER" not in config["services"][name]["environment"]


def test_the_image_is_built_from_the_repository(config, project):
    for name in (*AIRFLOW, "airflow-worker", "airflow-init", "drill-sandboxes"):
        build = config["services"][name]["build"]
        assert build == {"context": str(project), "dockerfile": "docker/Dockerfile"}, name


def test_the_signing_key_comes_from_the_env_file_only(config):
    compose_text = (REPO / "docker-compose.yaml").read_text()
    assert KEY not in compose_text and "AIRFLOW_CONN_DRILLKIT_SIGNING" not in compose_text
    for name in (*AIRFLOW, "airflow-worker"):
        env = config["services"][name]["environment"]
        assert env["AIRFLOW_CONN_DRILLKIT_SIGNING"] == f"generic://:{KEY}@"
        assert len(env["AIRFLOW__API_AUTH__JWT_SECRET"]) == 64


def test_without_the_env_file_compose_refuses_to_start(tmp_path):
    result = _compose(_checkout(tmp_path), "config", "-q")
    assert result.returncode != 0
    assert "drillkit.env" in result.stderr


def test_the_dockerfile_installs_the_locked_provider_on_the_same_airflow():
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    locked = {p["name"]: p["version"] for p in lock["package"]}
    base = re.search(r"^FROM apache/airflow:(\S+)-python(\S+)$", dockerfile, re.MULTILINE)
    assert base is not None
    assert base.group(1) == locked["apache-airflow"]
    assert f'"apache-airflow=={locked["apache-airflow"]}"' in dockerfile
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert f">={base.group(2)}" in requires
    assert "uv export" in dockerfile and "--constraint" in dockerfile and "--frozen" in dockerfile
    assert "COPY --chown=airflow:0 . /opt/drillkit" in dockerfile
    assert "plugins" not in dockerfile.replace("drillkit.plugins", "")  # never a plugins folder
    ignored = (REPO / "docker" / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", ".git", "docker/drillkit.env", "**/*.egg-info"} <= set(ignored)


def test_the_image_installs_every_major_drillkit_drills():
    from drillkit.pgmajors import DRILLED_MAJORS

    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    majors = re.search(r'^ARG PG_MAJORS="([0-9 ]+)"$', dockerfile, re.MULTILINE)
    assert majors is not None
    assert tuple(int(m) for m in majors.group(1).split()) == DRILLED_MAJORS
    assert "apt.postgresql.org/pub/repos/apt" in dockerfile  # PGDG: Debian ships only one major
    assert "create_main_cluster = false" in dockerfile
    assert "USER airflow" in dockerfile
