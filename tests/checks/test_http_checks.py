"""HTTP and TCP checks against loopback servers that verify the drill header and record requests."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from drillkit.checks import idempotency_key, run_checks
from drillkit.exceptions import InvalidInputError

# The manifest fixtures use these (tests cannot import conftest by name).
DRILL_ID = "3f9c2a1b-0000-4000-8000-000000000001"
CONTEXT_VALUE = "v1.drill-3f9c2a1b.signature-for-tests"
LoopbackHTTP = Any

pytestmark = pytest.mark.integration


def http_entry(url: str, resolved_by: str = "override") -> dict[str, Any]:
    return {"kind": "http", "resolved_by": resolved_by, "endpoint": {"url": url}}


def check(name: str, path: str = "/", **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": name,
        "kind": "http",
        "target": "orders-api",
        "path": path,
        "expect": {"status": 200},
    }
    return base | extra


@pytest.fixture
def api(http_server: Callable[..., LoopbackHTTP], routes: Any) -> LoopbackHTTP:
    return http_server(
        {
            "/health": routes.json({"status": "ok", "orders": {"count": 1200, "last": [7, 8]}}),
            "/orders": routes.json({"id": 99}, status=201),
            "/broken": routes.json({"error": "boom"}, status=500),
            "/slow": routes.json({"ok": True}, delay=0.3),
            "/to-prod": routes.redirect("http://db.prod.internal/health"),
            "/to-self": routes.redirect("/health", status=307),
            "/html": lambda _h, _r: (200, {"Content-Type": "text/html"}, b"<html>"),
        }
    )


@pytest.fixture
def manifest(api: LoopbackHTTP, make_manifest: Callable[..., Any]) -> dict[str, Any]:
    return make_manifest({"orders-api": http_entry(api.url)})


def by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in document["results"]}


def test_every_request_carries_the_drill_context(api: LoopbackHTTP, manifest: Any) -> None:
    assert manifest["drill_id"] == DRILL_ID
    assert manifest["context"]["value"] == CONTEXT_VALUE
    document = run_checks(
        [
            check(
                "health",
                "/health",
                expect={
                    "status": 200,
                    "json": [
                        {"path": "$.status", "equals": "ok"},
                        {"path": "$.orders.count", "gte": 1000},
                        {"path": "$.orders.last[1]", "between": [1, 10]},
                    ],
                    "latency_budget": "2s",
                },
            ),
            check("head", "/health", method="HEAD"),
            check("create", "/orders", method="POST", json={"sku": "A-1"}, expect={"status": 201}),
        ],
        manifest,
    )
    assert document["status"] == "passed", document
    health = by_name(document)["health"]
    assert health["observed"]["status"] == 200
    assert health["observed"]["$.orders.count"] == 1200
    assert health["expectation"] == (
        "status 200; $.status == 'ok'; $.orders.count >= 1000; $.orders.last[1] between 1 and 10; "
        "latency <= 2000 ms"
    )
    assert len(api.requests) == 3
    assert api.context_mismatches == []
    assert all(r.headers["x-drill-context"] == CONTEXT_VALUE for r in api.requests)
    post = next(r for r in api.requests if r.method == "POST")
    assert json.loads(post.body) == {"sku": "A-1"}


def test_idempotency_key_only_on_unsafe_methods_and_stable_across_runs(
    api: LoopbackHTTP, manifest: Any
) -> None:
    checks = [
        check("create", "/orders", method="POST", json={"sku": "A-1"}, expect={"status": 201}),
        check("read", "/health"),
    ]
    run_checks(checks, manifest)
    run_checks(checks, manifest)  # a retried task
    posts = [r for r in api.requests if r.method == "POST"]
    gets = [r for r in api.requests if r.method == "GET"]
    assert len(posts) == 2 and len(gets) == 2
    keys = {r.headers["x-idempotency-key"] for r in posts}
    assert keys == {idempotency_key(DRILL_ID, "create")}
    assert all("x-idempotency-key" not in r.headers for r in gets)


def test_failed_expectations_say_what_was_seen(api: LoopbackHTTP, manifest: Any) -> None:
    document = run_checks(
        [
            check("broken", "/broken"),
            check(
                "wrong-json",
                "/health",
                expect={
                    "status": 200,
                    "json": [
                        {"path": "$.orders.count", "lt": 10},
                        {"path": "$.orders.missing", "equals": 1},
                    ],
                },
            ),
            check("not-json", "/html", expect={"status": 200, "json": [{"path": "$.a", "gte": 1}]}),
            check("too-slow", "/slow", expect={"status": 200, "latency_budget": "100ms"}),
            check("no-route", "/nope"),
        ],
        manifest,
    )
    results = by_name(document)
    assert {r["status"] for r in results.values()} == {"failed"}
    assert results["broken"]["detail"] == "status 500, expected 200"
    assert "$.orders.count: observed 1200, expected < 10" in results["wrong-json"]["detail"]
    assert "$.orders.missing: no key 'missing' at $.orders" in results["wrong-json"]["detail"]
    assert "not JSON" in results["not-json"]["detail"]
    assert "over the budget of 100 ms" in results["too-slow"]["detail"]
    assert results["too-slow"]["observed"]["latency_ms"] >= 300
    assert document["status"] == "failed"


def test_redirect_outside_the_manifest_is_refused_and_not_followed(
    api: LoopbackHTTP, manifest: Any
) -> None:
    # Even a check that expects the 302 must not pass: the sandbox points at production.
    document = run_checks(
        [check("login", "/to-prod"), check("login-302", "/to-prod", expect={"status": 302})],
        manifest,
    )
    for result in document["results"]:
        assert result["status"] == "error"
        assert "http://db.prod.internal/health" in result["detail"]
    assert {f["code"] for f in document["findings"]} == {"REDIRECT_OUTSIDE_MANIFEST"}
    assert document["status"] == "error"
    assert [r.path for r in api.requests] == ["/to-prod", "/to-prod"]


def test_redirect_within_the_manifest_is_followed_with_the_drill_context(
    api: LoopbackHTTP, manifest: Any, http_server: Callable[..., LoopbackHTTP], routes: Any
) -> None:
    other = http_server({"/elsewhere": routes.json({"ok": True})})
    api.routes["/to-other"] = routes.redirect(f"{other.url}/elsewhere", status=308)
    manifest["services"]["other-api"] = http_entry(other.url)
    document = run_checks(
        [
            check("self", "/to-self"),
            check("other", "/to-other", method="PUT", json={"a": 1}),
        ],
        manifest,
    )
    assert document["status"] == "passed", document
    assert [r.path for r in other.requests] == ["/elsewhere"]
    followed = other.requests[0]
    assert followed.method == "PUT" and json.loads(followed.body) == {"a": 1}
    assert followed.headers["x-idempotency-key"] == idempotency_key(DRILL_ID, "other")
    assert other.context_mismatches == [] and api.context_mismatches == []


def test_connection_refused_is_unreachable_and_not_retried(
    make_manifest: Callable[..., Any], closed_port: int, api: LoopbackHTTP
) -> None:
    manifest = make_manifest(
        {"orders-api": http_entry(f"http://127.0.0.1:{closed_port}"), "ok-api": http_entry(api.url)}
    )
    document = run_checks([check("a", "/health"), check("b", "/health")], manifest)
    assert [r["status"] for r in document["results"]] == ["error", "error"]
    assert [(f["code"], f["subject"]) for f in document["findings"]] == [
        ("SANDBOX_UNREACHABLE", "orders-api")
    ]
    assert api.requests == []  # nothing went to any other endpoint


def test_dns_failure_is_unreachable(make_manifest: Callable[..., Any]) -> None:
    manifest = make_manifest({"orders-api": http_entry("http://drillkit-no-such-host.invalid")})
    document = run_checks([check("a", "/health", timeout="5s")], manifest)
    assert document["results"][0]["status"] == "error"
    assert [f["code"] for f in document["findings"]] == ["SANDBOX_UNREACHABLE"]


def test_a_slow_drip_answer_is_cut_off_at_the_timeout(
    api: LoopbackHTTP, manifest: Any, routes: Any
) -> None:
    # Each byte arrives within the socket timeout: only the engine's watchdog can stop it.
    api.routes["/drip"] = routes.drip(5.0)
    started = time.monotonic()
    document = run_checks([check("drip", "/drip", timeout="0.5s")], manifest)
    elapsed = time.monotonic() - started
    [result] = document["results"]
    assert result["status"] == "error"
    assert result["detail"].startswith("timed out after 0.5s")
    assert elapsed < 1.5
    assert [f["code"] for f in document["findings"]] == ["CHECK_TIMED_OUT"]


def test_manifest_without_drill_context_is_refused(
    api: LoopbackHTTP, make_manifest: Callable[..., Any]
) -> None:
    manifest = make_manifest({"orders-api": http_entry(api.url)}, context=None)
    with pytest.raises(InvalidInputError, match="signed drill context"):
        run_checks([check("a", "/health")], manifest)
    assert api.requests == []


def test_tcp_check_observes_connect_latency(
    api: LoopbackHTTP, make_manifest: Callable[..., Any], closed_port: int
) -> None:
    manifest = make_manifest(
        {
            "orders-api": http_entry(api.url),
            "cache": {
                "kind": "tcp",
                "resolved_by": "spec_default",
                "endpoint": {"host": "127.0.0.1", "port": api.port},
            },
            "down": {
                "kind": "tcp",
                "resolved_by": "override",
                "endpoint": {"host": "127.0.0.1", "port": closed_port},
            },
        }
    )
    document = run_checks(
        [
            {"name": "api-port", "kind": "tcp", "target": "orders-api"},
            {"name": "cache", "kind": "tcp", "target": "cache", "timeout": "2s"},
            {"name": "down", "kind": "tcp", "target": "down", "timeout": "2s"},
        ],
        manifest,
    )
    results = by_name(document)
    for name in ("api-port", "cache"):
        assert results[name]["status"] == "passed"
        assert 0 < results[name]["observed"] < 1000
    assert results["cache"]["expectation"] == "connects within 2s"
    assert results["down"]["status"] == "error"
    assert [(f["code"], f["subject"]) for f in document["findings"]] == [
        ("SANDBOX_UNREACHABLE", "down")
    ]


def _self_signed(directory: Any) -> tuple[str, str]:
    import subprocess

    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


def test_an_untrusted_tls_certificate_is_an_error_never_a_pass(
    api: LoopbackHTTP, make_manifest: Callable[..., Any], tmp_path: Any
) -> None:
    import ssl

    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(*_self_signed(tmp_path))
    api.server.socket = tls.wrap_socket(api.server.socket, server_side=True)
    manifest = make_manifest({"orders-api": http_entry(f"https://127.0.0.1:{api.port}")})
    document = run_checks([check("tls", "/health")], manifest)
    result = by_name(document)["tls"]
    assert result["status"] == "error" and document["status"] == "error"
    assert (
        "TLS handshake failed" in result["detail"]
        and "CERTIFICATE_VERIFY_FAILED" in result["detail"]
    )
    assert api.requests == []  # nothing was sent over an unverified connection


def test_a_chunked_answer_is_read_whole(
    http_server: Callable[..., LoopbackHTTP], make_manifest: Callable[..., Any]
) -> None:
    def chunked(handler: Any, _recorded: Any) -> None:
        handler.protocol_version = "HTTP/1.1"
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Connection", "close")
        handler.end_headers()
        for part in (b'{"rows": ', b"[1, 2, 3", b"]}"):
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        handler.wfile.write(b"0\r\n\r\n")
        handler.close_connection = True

    server = http_server({"/rows": chunked})
    manifest = make_manifest({"orders-api": http_entry(server.url)})
    expect = {"status": 200, "json": [{"path": "$.rows[2]", "equals": 3}]}
    document = run_checks([check("chunked", "/rows", expect=expect)], manifest)
    assert by_name(document)["chunked"]["status"] == "passed", document


class RawHTTP:
    """A loopback server that sends fixed bytes after reading a request head (for answers
    http.server cannot shape: no length, interim 1xx, a lying Content-Length)."""

    def __init__(self, answer: bytes) -> None:
        import socket
        import threading

        self.answer = answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data and (more := conn.recv(4096)):
                    data += more
                conn.sendall(self.answer)

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize(
    ("answer", "status", "words"),
    [
        (  # no Content-Length, no chunking: the body ends with the connection
            b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"ok": true}',
            "passed",
            "",
        ),
        (  # an interim answer before the real one
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n"
            b'{"ok": true}',
            "passed",
            "",
        ),
        (  # announces more than drillkit reads
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n{}",
            "error",
            "answered more than",
        ),
        (  # promises 50 bytes, sends 2, closes
            b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{}",
            "error",
            "failed after connecting",
        ),
        (b"SSH-2.0-OpenSSH_9.6\r\n", "error", "did not answer HTTP"),
    ],
    ids=["close-delimited", "interim-100", "too-big", "cut-short", "not-http"],
)
def test_answers_of_every_shape_are_read_or_refused_with_the_reason(
    make_manifest: Callable[..., Any], answer: bytes, status: str, words: str
) -> None:
    server = RawHTTP(answer)
    try:
        manifest = make_manifest({"orders-api": http_entry(f"http://127.0.0.1:{server.port}")})
        expect = {"status": 200, "json": [{"path": "$.ok", "equals": True}]}
        document = run_checks([check("shape", "/x", expect=expect)], manifest)
    finally:
        server.close()
    result = by_name(document)["shape"]
    assert result["status"] == status, result
    assert words in result["detail"]
