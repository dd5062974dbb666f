"""Session-wide isolation: drillkit state, sandboxes and scenarios live in a throwaway /tmp tree.

The tree is world-traversable because PostgreSQL runs as an unprivileged user when tests run as
root; pytest's own tmp_path sits under a 0700 directory that user cannot reach.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

# The Barman Cloud store fixtures (object_store, barman_clean, barman_damaged) serve the barman and
# the kubernetes tiers: a plugin, so both see the same session-scoped store.
sys.path.insert(0, str(Path(__file__).parent / "barman"))
pytest_plugins = ("store_fixtures",)

_ROOT = Path(tempfile.mkdtemp(prefix="drillkit-tests-", dir="/tmp"))
_ROOT.chmod(0o755)
os.environ["DRILLKIT_STATE_DIR"] = str(_ROOT / "state")
os.environ["DRILLKIT_SANDBOX_ROOT"] = str(_ROOT / "sandboxes")
os.environ["DRILLKIT_SIGNING_KEY"] = os.urandom(32).hex()
# Airflow reads its configuration once, at import: set it before any test imports airflow.
os.environ["AIRFLOW_HOME"] = str(_ROOT / "airflow")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(_ROOT / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_ROOT / 'airflow' / 'airflow.db'}"
(_ROOT / "dags").mkdir()


@pytest.fixture(scope="session")
def work_root() -> Path:
    return _ROOT


@pytest.fixture
def workdir(work_root: Path, request: pytest.FixtureRequest) -> Path:
    """A per-test directory the PostgreSQL OS user can reach."""
    path = Path(tempfile.mkdtemp(prefix=request.node.name[:40] + "-", dir=work_root))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def airflow_db(work_root: Path) -> Path:
    """A migrated Airflow metadata database (SQLite), once per session."""
    import sys

    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run(
        [str(airflow), "db", "migrate"], check=True, capture_output=True, env=dict(os.environ)
    )
    return work_root / "airflow" / "airflow.db"


def _clone_repo(source: Path, target: Path) -> None:
    # cp -a keeps ownership and modes, as a real repository would have them.
    subprocess.run(["cp", "-a", str(source), str(target)], check=True)


@pytest.fixture(scope="session")
def clean_scenario(work_root: Path) -> tuple[Path, dict]:
    """A real scenario (production, WAL archive, 3 backups, 6 batches), built once per session."""
    from drillkit.scenario import ScenarioOptions, create_scenario

    directory = work_root / "scenario-clean"
    truth = create_scenario(directory, ScenarioOptions(), say=lambda _m: None)
    return directory / "repo", truth


@pytest.fixture(scope="session")
def tar_scenario(work_root: Path) -> tuple[Path, dict]:
    """A small scenario taken with pg_basebackup -Ft -z (2 tar.gz backups), with a tablespace."""
    from drillkit.scenario import ScenarioOptions, create_scenario

    directory = work_root / "scenario-tar"
    options = ScenarioOptions(
        batches=3,
        rows_per_batch=100,
        backups_after=(0, 1),
        initial_mb=1,
        backup_format="tar.gz",
        tablespace=True,
    )
    truth = create_scenario(directory, options, say=lambda _m: None)
    return directory / "repo", truth


@pytest.fixture(scope="session")
def pgbackrest_stanza(work_root: Path) -> tuple[Path, dict]:
    """A pgBackRest stanza on PostgreSQL 15: full after batch 0, incremental after batch 2."""
    from drillkit.scenario import ScenarioOptions, create_scenario

    directory = work_root / "scenario-pgbackrest"
    options = ScenarioOptions(
        tool="pgbackrest", batches=5, rows_per_batch=100, backups_after=(0, 2), initial_mb=2
    )
    truth = create_scenario(directory, options, say=lambda _m: None)
    return directory, truth


@pytest.fixture(scope="session")
def pg15_scenario(work_root: Path) -> tuple[Path, dict]:
    """A scenario built with PostgreSQL 15's own binaries (Debian's postgresql-15, which
    `make test` installs): 4 batches, backups after batches 0 and 2."""
    from drillkit.scenario import ScenarioOptions, create_scenario

    directory = work_root / "scenario-pg15"
    options = ScenarioOptions(
        batches=4, rows_per_batch=100, backups_after=(0, 2), initial_mb=1, pg_major=15
    )
    truth = create_scenario(directory, options, say=lambda _m: None)
    return directory / "repo", truth


def _damaged(scenario: tuple[Path, dict], workdir: Path):
    from drillkit.scenario import ScenarioOptions, apply_damage

    def make(**damage) -> tuple[Path, dict]:
        repo, truth = scenario
        copy = workdir / "repo"
        _clone_repo(repo, copy)
        shutil.copy(repo.parent / "drill.yaml", workdir / "drill.yaml")
        truth = dict(truth)
        truth["damage"] = apply_damage(copy, truth, ScenarioOptions(**damage), lambda _m: None)
        return copy, truth

    return make


@pytest.fixture
def damaged_scenario(clean_scenario, workdir: Path):
    """Factory: a copy of the clean scenario with the given damage applied."""
    return _damaged(clean_scenario, workdir)


@pytest.fixture
def damaged_pg15_scenario(pg15_scenario, workdir: Path):
    """Factory: a copy of the PostgreSQL 15 scenario with the given damage applied."""
    return _damaged(pg15_scenario, workdir)


@pytest.fixture
def damaged_tar_scenario(tar_scenario, workdir: Path):
    """Factory: a copy of the tar scenario with the given damage applied (none: a plain copy)."""
    return _damaged(tar_scenario, workdir)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Nothing is left running: collect every sandbox as if all had expired, then delete."""
    try:
        from drillkit.sandbox.gc import collect_local

        collect_local(now=datetime.now(UTC) + timedelta(days=3650))
    finally:
        if not os.environ.get("DRILLKIT_KEEP_TEST_ROOT"):
            shutil.rmtree(_ROOT, ignore_errors=True)
