"""An S3-compatible object store on loopback for tests: moto's standalone server (``moto_server``).

moto's server mode speaks the S3 HTTP API to boto3 and barman-cloud. Its request log is moto's
recorder: with ``MOTO_RECORDER_FILEPATH`` set, ``POST /moto-api/recorder/start-recording`` makes
the server append every incoming request (method, raw URL, headers, body) as one JSON line to that
file, and ``stop-recording`` ends it (moto docs, docs/configuration/recorder/index.rst, "Usage in
ServerMode"; moto/moto_api/_internal/recorder/models.py ``Recorder._record_request``, called for
every request by moto/core/utils.py ``convert_to_flask_response``). Recorder calls themselves are
never recorded. Tests record only while drillkit reads the store, so uploads are not logged.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

# Fake credentials moto accepts (it does not check signatures' secrets); never real ones.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIADRILLKITTEST0001",
    "AWS_SECRET_ACCESS_KEY": "drillkit-test-secret-9f3b7c1e2d",
    "AWS_DEFAULT_REGION": "us-east-1",
}
READ_METHODS = frozenset({"GET", "HEAD"})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ObjectStore:
    url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def listing(self, bucket: str) -> dict[str, tuple[str, int]]:
        """Every object's key -> (ETag, size)."""
        out: dict[str, tuple[str, int]] = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = (obj["ETag"], obj["Size"])
        return out

    @contextmanager
    def recording(self) -> Iterator[list[dict]]:
        """Record every request the server receives inside the block; yields the entries
        (filled when the block ends)."""
        requests.post(
            f"{self.url}/moto-api/recorder/reset-recording", timeout=10
        ).raise_for_status()
        requests.post(
            f"{self.url}/moto-api/recorder/start-recording", timeout=10
        ).raise_for_status()
        entries: list[dict] = []
        try:
            yield entries
        finally:
            requests.post(
                f"{self.url}/moto-api/recorder/stop-recording", timeout=10
            ).raise_for_status()
            text = self.log_path.read_text() if self.log_path.exists() else ""
            entries.extend(json.loads(line) for line in text.splitlines() if line.strip())


def start_object_store(directory: Path) -> ObjectStore:
    port = _free_port()
    log_path = directory / "moto-requests.jsonl"
    env = {**os.environ, "MOTO_RECORDER_FILEPATH": str(log_path)}
    env.pop("MOTO_ENABLE_RECORDING", None)
    moto = Path(sys.executable).parent / "moto_server"
    process = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=open(directory / "moto-server.log", "wb"),  # noqa: SIM115
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {process.returncode}")
        try:
            requests.get(f"{url}/moto-api/", timeout=2)
            return ObjectStore(url=url, log_path=log_path, process=process)
        except requests.ConnectionError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("moto_server did not answer within 60 s")


def stop_object_store(store: ObjectStore) -> None:
    store.process.terminate()
    try:
        store.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        store.process.kill()
        store.process.wait()
