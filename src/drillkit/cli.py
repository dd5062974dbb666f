"""The ``drillkit`` command line: scenarios, catalogs, restores and garbage collection.

Exit codes: 0 PASS / success, 1 FAIL (the drill ran and found problems), 2 COULD NOT VERIFY or
invalid input.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from drillkit.exceptions import (
    DrillError,
    InvalidInputError,
    NoRestorableBackupError,
    SandboxError,
)

EXIT_PASS, EXIT_FAIL, EXIT_UNVERIFIED = 0, 1, 2


def _say(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def cmd_scenario_create(args: argparse.Namespace) -> int:
    from drillkit.scenario import ScenarioOptions, create_scenario

    if args.tool == "barman-cloud":
        return _barman_scenario(args)
    options = ScenarioOptions(
        batches=args.batches,
        rows_per_batch=args.rows_per_batch,
        backups_after=tuple(int(x) for x in args.backups_after.split(",")),
        initial_mb=args.initial_mb,
        corrupt_newest=args.corrupt_newest,
        truncate_newest=args.truncate_newest,
        remove_wal_after_batch=args.remove_wal_after_batch,
        keep_production=args.keep_production,
        backup_format=args.backup_format,
        tablespace=args.tablespace,
        tool=args.tool,
        pg_bin_dir=args.pg_bin_dir,
        pg_major=args.pg_major,
        backup_types=tuple(t for t in (args.backup_types or "").split(",") if t),
    )
    truth = create_scenario(Path(args.directory), options, say=_say)
    print(json.dumps({"repo": str(Path(args.directory) / "repo"), **truth}, indent=2))
    return EXIT_PASS


def _barman_scenario(args: argparse.Namespace) -> int:
    """``--tool barman-cloud``: credentials come from the AWS_* environment, never the line."""
    from drillkit.barman.scenario import BarmanScenarioOptions, create_barman_scenario
    from drillkit.exceptions import InvalidInputError

    if not args.endpoint_url and not args.destination:
        raise InvalidInputError(
            "--tool barman-cloud needs --endpoint-url URL (an S3-compatible server) or "
            "--destination s3://bucket/path on AWS"
        )
    if args.truncate_newest or args.backup_format != "plain" or args.tablespace:
        raise InvalidInputError(
            "--truncate-newest, --backup-format and --tablespace are pg_basebackup options; "
            "with --tool barman-cloud use --corrupt-newest, --remove-wal-after-batch and "
            "--interrupted-backup"
        )
    options = BarmanScenarioOptions(
        endpoint_url=args.endpoint_url,
        destination=args.destination or "s3://drillkit-scenario/barman",
        server_name=args.server_name,
        batches=args.batches,
        rows_per_batch=args.rows_per_batch,
        backups_after=tuple(int(x) for x in args.backups_after.split(",")),
        initial_mb=args.initial_mb,
        corrupt_newest=args.corrupt_newest,
        remove_wal_after_batch=args.remove_wal_after_batch,
        interrupted_backup=args.interrupted_backup,
        wal_compression=args.wal_compression,
        keep_production=args.keep_production,
    )
    truth = create_barman_scenario(Path(args.directory), options, say=_say)
    print(json.dumps(truth, indent=2))
    return EXIT_PASS


def catalog_config(args: argparse.Namespace) -> dict[str, Any]:
    """The catalog the command names: a local repository path, or ``--stanza`` (pgBackRest)."""
    if getattr(args, "stanza", None):
        config: dict[str, Any] = {"kind": "pgbackrest", "stanza": args.stanza}
        if args.config:
            config["config"] = str(Path(args.config).absolute())
        return config
    if not args.repo:
        raise InvalidInputError(
            "name a repository: a local one's path (base/ and wal/), or --stanza NAME "
            "[--config pgbackrest.conf] for a pgBackRest stanza"
        )
    return {"kind": "local", "path": args.repo}


def catalog_rows(catalog: dict[str, Any] | str, *, verify: bool) -> list[dict[str, Any]]:
    """One row per backup: verification and the window of targets it can restore to."""
    from drillkit.catalog.registry import open_repository
    from drillkit.pitr import evaluate
    from drillkit.timeutil import isoformat

    config = {"kind": "local", "path": catalog} if isinstance(catalog, str) else catalog
    snapshot = open_repository(config).snapshot(verify=verify, progress=_say)
    rows = []
    for backup in sorted(snapshot.backups, key=lambda b: b.stop_lsn):
        ev = evaluate(snapshot, backup, target=None, rpo=timedelta(0), require_verified=verify)
        rows.append(
            {
                **backup.summary(),
                "verification_detail": backup.verification.detail,
                "restorable_from": isoformat(ev.restorable_from) if ev.restorable_from else None,
                "restorable_to": isoformat(ev.recovery_point) if ev.recovery_point else None,
                "usable": ev.eligible,
                "code": None if ev.eligible else ev.code,
                "problem": None if ev.eligible else ev.reason,
                "wal_gap": ev.plan.gap.segment if ev.plan and ev.plan.gap else None,
            }
        )
    return rows


def cmd_catalog(args: argparse.Namespace) -> int:
    rows = catalog_rows(catalog_config(args), verify=not args.no_verify)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        width = max([24, *(len(r["backup_id"]) for r in rows)])
        header = (
            f"{'backup':<{width}} {'pg':>3} {'type':<4} {'size':>8} {'verification':<18} "
            f"{'restorable window (UTC)':<58}"
        )
        print(header)
        print("-" * len(header))
        for row in rows:
            window = f"{row['restorable_from']} .. {row['restorable_to']}" if row["usable"] else "-"
            size = f"{row['size_bytes'] / 2**20:.0f}M"
            major = row["pg_major"] or "?"
            print(
                f"{row['backup_id']:<{width}} {major:>3} {row['type']:<4} {size:>8} "
                f"{row['verification']:<18} {window}"
            )
            if row["depends_on"]:
                print(f"{'':<{width}}   references: {', '.join(row['depends_on'])}")
            if row["problem"]:
                print(f"{'':<24}   {row['code']}: {row['problem']}")
    if any(r["usable"] for r in rows):
        return EXIT_PASS
    from drillkit.findings import TOOL_CODES

    # Backups this worker could not read are not judged: that is no FAIL.
    return EXIT_UNVERIFIED if any(r["code"] in TOOL_CODES for r in rows) else EXIT_FAIL


def cmd_restore(args: argparse.Namespace) -> int:
    """Restore with the core alone (no Airflow) and, given ground truth, prove the result."""
    from drillkit.restore import restore_and_prove

    result = restore_and_prove(
        catalog=catalog_config(args),
        target=args.target_time,
        policy=args.policy,
        rpo=args.rpo,
        truth_path=Path(args.truth) if args.truth else None,
        keep=args.keep,
        say=_say,
    )
    print(json.dumps(result, indent=2) if args.json else result["summary"])
    return {"PASS": EXIT_PASS, "FAIL": EXIT_FAIL}.get(result["verdict"], EXIT_UNVERIFIED)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the spec's drill DAG in process (dag.test), the same code path as in Airflow."""
    import os

    from drillkit.outputs import catalog_paths, check_outputs, refuse_inside
    from drillkit.spec import load_spec
    from drillkit.state import state_dir
    from drillkit.timeutil import parse_target_time

    spec_path = Path(args.spec).resolve()
    spec = load_spec(spec_path)  # bad specs fail here, before Airflow starts
    # Nothing a run writes may land in the repository it drills: refused before anything runs.
    check_outputs(
        spec.catalog,
        report_path=spec.report.get("path"),
        json_out=args.json,
        junit_out=args.junit,
    )
    conf: dict[str, Any] = {"dry_run": args.dry_run, "keep_sandbox": args.keep_sandbox}
    if args.target_time:
        conf["target_time"] = parse_target_time(args.target_time).isoformat()
    if args.tiers:
        conf["tiers"] = [t.strip() for t in args.tiers.split(",") if t.strip()]
        unknown = sorted(set(conf["tiers"]) - {t.name for t in spec.tiers})
        if unknown:
            raise InvalidInputError(f"--tiers: {', '.join(unknown)} not in the spec's tiers")
    if args.pinned_backup:
        conf["pinned_backup"] = args.pinned_backup
    home = Path(args.airflow_home or os.environ.get("DRILLKIT_RUN_HOME") or state_dir() / "run")
    refuse_inside(
        home, setting="--airflow-home (DRILLKIT_RUN_HOME)", catalogs=catalog_paths(spec.catalog)
    )
    home.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("DRILLKIT_SIGNING_KEY"):
        # A private Airflow home has no drillkit_signing connection: keep a local key there.
        key_file = home / "signing.key"
        if not key_file.exists():
            key_file.touch(mode=0o600)
            key_file.write_text(os.urandom(32).hex())
        os.environ["DRILLKIT_SIGNING_KEY"] = key_file.read_text().strip()
    from drillkit.operators.runner import run_spec

    return run_spec(
        spec_path,
        home=home,
        conf=conf,
        json_out=Path(args.json) if args.json else None,
        junit_out=Path(args.junit) if args.junit else None,
    )


def cmd_dags_sync(args: argparse.Namespace) -> int:
    from drillkit.operators.dag_factory import sync_loaders

    for path in sync_loaders(Path(args.dags_dir)):
        print(f"wrote {path}")
    return EXIT_PASS


def cmd_gc(args: argparse.Namespace) -> int:
    from drillkit.sandbox.gc import collect_local

    removed = collect_local(root=Path(args.root) if args.root else None, dry_run=args.dry_run)
    if args.kubeconfig:
        from drillkit.k8s.client import Kube, api_from_kubeconfig
        from drillkit.k8s.gc import collect

        api = api_from_kubeconfig(args.kubeconfig, context=args.context)
        removed += collect(Kube(api), dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for entry in removed:
        print(f"{verb} {entry['kind']} {entry['id']} ({entry['reason']})")
    print(f"{verb} {len(removed)} expired object(s)")
    return EXIT_PASS


def cmd_doctor(args: argparse.Namespace) -> int:
    """What this worker can drill; exit 0 when at least one PostgreSQL major is usable."""
    from drillkit.doctor import diagnose, render
    from drillkit.pgbin import PgSettings

    settings = PgSettings.from_mapping(args.pg_bin_dirs, where="--pg-bin-dirs")
    result = diagnose(settings)
    print(json.dumps(result, indent=2) if args.json else render(result))
    if result["usable_majors"] and result["os_user"]["reaches_sandbox_root"]:
        return EXIT_PASS
    return EXIT_UNVERIFIED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="drillkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    scenario = sub.add_parser("scenario", help="build demo/test backup repositories")
    scenario_sub = scenario.add_subparsers(dest="scenario_command", required=True)
    create = scenario_sub.add_parser("create", help="run a production, archive WAL, take backups")
    create.add_argument("directory")
    create.add_argument("--batches", type=int, default=6)
    create.add_argument("--rows-per-batch", type=int, default=200)
    create.add_argument("--backups-after", default="0,2,4", help="batch numbers, comma separated")
    create.add_argument("--initial-mb", type=int, default=8, help="data loaded before backups")
    create.add_argument("--corrupt-newest", action="store_true", help="flip bytes in a data file")
    create.add_argument("--truncate-newest", action="store_true", help="truncate a data file")
    create.add_argument(
        "--remove-wal-after-batch", type=int, default=None, help="delete that batch's segment"
    )
    create.add_argument("--keep-production", action="store_true")
    create.add_argument(
        "--backup-format",
        choices=["plain", "tar", "tar.gz"],
        default="plain",
        help="pg_basebackup -Fp, or -Ft (tar.gz: gzip-compressed)",
    )
    create.add_argument(
        "--tablespace", action="store_true", help="keep a table in a user tablespace"
    )
    create.add_argument(
        "--tool",
        choices=["pg_basebackup", "pgbackrest", "barman-cloud"],
        default="pg_basebackup",
        help="pgbackrest: a stanza with full and incremental backups (PostgreSQL 15 default); "
        "barman-cloud: archive and back up into an object store (AWS_* credentials)",
    )
    create.add_argument(
        "--pg-bin-dir", default=None, help="PostgreSQL bin directory to build it with"
    )
    create.add_argument(
        "--pg-major", type=int, default=None, help="PostgreSQL major, found as a drill finds it"
    )
    create.add_argument(
        "--backup-types", default=None, help="pgbackrest: e.g. full,incr,diff (default full,incr..)"
    )
    create.add_argument("--endpoint-url", default=None, help="barman-cloud: the S3 endpoint")
    create.add_argument(
        "--destination", default=None, help="barman-cloud: s3://bucket/path to write into"
    )
    create.add_argument("--server-name", default="production", help="barman-cloud: server name")
    create.add_argument(
        "--interrupted-backup",
        action="store_true",
        help="barman-cloud: leave a backup killed after it started (status STARTED)",
    )
    create.add_argument(
        "--wal-compression", choices=["gzip", "none"], default="gzip", help="barman-cloud WAL"
    )
    create.set_defaults(func=cmd_scenario_create)

    catalog = sub.add_parser("catalog", help="list backups, verification and restore windows")
    catalog.add_argument("repo", nargs="?", help="a local repository (base/ and wal/)")
    catalog.add_argument("--stanza", default=None, help="a pgBackRest stanza instead of a path")
    catalog.add_argument("--config", default=None, help="its pgbackrest.conf")
    catalog.add_argument("--json", action="store_true")
    catalog.add_argument("--no-verify", action="store_true", help="skip pg_verifybackup")
    catalog.set_defaults(func=cmd_catalog)

    restore = sub.add_parser("restore", help="restore to a target time with the core and prove it")
    restore.add_argument("repo", nargs="?", help="a local repository (base/ and wal/)")
    restore.add_argument("--stanza", default=None, help="a pgBackRest stanza instead of a path")
    restore.add_argument("--config", default=None, help="its pgbackrest.conf")
    restore.add_argument("--target-time", default=None, help="ISO 8601 with zone; default newest")
    restore.add_argument("--policy", default="latest")
    restore.add_argument("--rpo", default="0s")
    restore.add_argument("--truth", default=None, help="truth.json of a scenario, to prove rows")
    restore.add_argument("--keep", action="store_true", help="leave the sandbox running")
    restore.add_argument("--json", action="store_true")
    restore.set_defaults(func=cmd_restore)

    run = sub.add_parser("run", help="run a drill spec's DAG in process (exit 0/1/2)")
    run.add_argument("spec")
    run.add_argument("--target-time", default=None, help="ISO 8601 with zone")
    run.add_argument("--dry-run", action="store_true", help="select and plan only")
    run.add_argument("--tiers", default=None, help="comma-separated tier names")
    run.add_argument("--pinned-backup", default=None)
    run.add_argument("--keep-sandbox", action="store_true")
    run.add_argument("--json", default=None, help="write the report JSON here")
    run.add_argument("--junit", default=None, help="write JUnit XML here")
    run.add_argument("--airflow-home", default=None, help="default: <state dir>/run")
    run.set_defaults(func=cmd_run)

    dags = sub.add_parser("dags", help="DAG loader files for drill specs")
    dags_sub = dags.add_subparsers(dest="dags_command", required=True)
    sync = dags_sub.add_parser("sync", help="write a loader .py for each spec in DIR/drills")
    sync.add_argument("dags_dir")
    sync.set_defaults(func=cmd_dags_sync)

    gc = sub.add_parser("gc", help="remove expired sandboxes")
    gc.add_argument("--dry-run", action="store_true")
    gc.add_argument("--root", default=None, help="sandbox root (default: DRILLKIT_SANDBOX_ROOT)")
    gc.add_argument(
        "--kubeconfig", default=None, help="also collect drill namespaces and routes there"
    )
    gc.add_argument("--context", default=None, help="kubeconfig context (default: current)")
    gc.set_defaults(func=cmd_gc)

    doctor = sub.add_parser(
        "doctor", help="which PostgreSQL majors this worker can drill (exit 0: at least one)"
    )
    doctor.add_argument("--json", action="store_true")
    doctor.add_argument(
        "--pg-bin-dirs", default=None, help='JSON {"15": "/usr/lib/postgresql/15/bin"} to check'
    )
    doctor.set_defaults(func=cmd_doctor)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except InvalidInputError as exc:
        print(f"drillkit: {exc.code}: {exc}", file=sys.stderr)
        return EXIT_UNVERIFIED
    except (NoRestorableBackupError, SandboxError) as exc:
        # The drill ran and the backups failed it: that is a finding, not a tooling problem.
        # A problem of the drill host (a full disk, an unreadable backup) blames no backup.
        from drillkit.gate import FAILURE_CODES

        print(f"drillkit: {exc.code}: {exc}", file=sys.stderr)
        return EXIT_FAIL if exc.code in FAILURE_CODES else EXIT_UNVERIFIED
    except DrillError as exc:
        print(f"drillkit: {exc.code}: {exc}", file=sys.stderr)
        return EXIT_UNVERIFIED


if __name__ == "__main__":
    sys.exit(main())
