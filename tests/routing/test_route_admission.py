"""The production guard lets a production host through only on a proven drill route, and only
for a request carrying the drill's signed context (drillkit.routing.proof admits it)."""

from __future__ import annotations

import pytest

from drillkit.exceptions import ProductionTargetRefusedError
from drillkit.routing import resolve
from drillkit.routing.guard import ProductionGuard
from drillkit.routing.proof import ProbeAnswer, prove_routes

HOST = "orders-api.orders.svc.cluster.local"
CONTEXT = "v1.6f1c1f9e.drill.1.2.sig"


@pytest.fixture
def answers(monkeypatch):
    table = {HOST: ["127.0.0.1"]}
    monkeypatch.setattr(resolve, "lookup", lambda host: table[host])
    return table


def manifest(port: int = 8080) -> dict:
    return {
        "context": {"header": "X-Drill-Context", "value": CONTEXT},
        "routes": {
            "backend": "istio",
            "proof_header": "x-drill-sandbox",
            "routes": {"orders-api": {"host": HOST, "port": port}},
        },
    }


def stamped_only_with_context(stamp: str):
    sent = []

    def send(addresses, host, port, path, headers, timeout, proof_header):
        sent.append((addresses, host, port, path, dict(headers)))
        return ProbeAnswer(200, stamp if headers else None)

    return send, sent


def test_a_production_host_is_refused_until_a_probe_proves_the_route(answers):
    guard = ProductionGuard.from_spec({"hosts": [HOST]})
    with pytest.raises(ProductionTargetRefusedError):
        guard.pin(HOST, 8080, service="orders-api", context=CONTEXT)
    send, sent = stamped_only_with_context("orders-abc123")
    proof = prove_routes(manifest(), guard=guard, sandbox_id="orders-abc123", send=send)
    assert proof["proven"] is True
    # Both probes went to the judged address, one with the signed header, one without.
    assert [s[4] for s in sent] == [{"X-Drill-Context": CONTEXT}, {}]
    assert {s[0] for s in sent} == {("127.0.0.1",)}
    assert guard.pin(HOST, 8080, service="orders-api", context=CONTEXT) == ("127.0.0.1",)
    assert guard.proven_routes() == [f"{HOST}:8080"]
    for context, port in ((None, 8080), ("v1.other", 8080), (CONTEXT, 9090)):
        with pytest.raises(ProductionTargetRefusedError):
            guard.pin(HOST, port, service="orders-api", context=context)


@pytest.mark.parametrize(
    ("stamp_with", "stamp_without", "why"),
    [
        (None, None, "no x-drill-sandbox"),  # the drill rule did not route it
        ("other-sandbox", None, "not orders-abc123"),  # another drill's route won
        ("orders-abc123", "orders-abc123", "production traffic reaches a drill route"),
    ],
)
def test_an_unproven_route_admits_nothing(answers, stamp_with, stamp_without, why):
    guard = ProductionGuard.from_spec({"hosts": [HOST]})

    def send(addresses, host, port, path, headers, timeout, proof_header):
        return ProbeAnswer(200, stamp_with if headers else stamp_without)

    proof = prove_routes(manifest(), guard=guard, sandbox_id="orders-abc123", send=send)
    assert proof["proven"] is False
    assert why in proof["routes"]["orders-api"]["reason"]
    assert guard.proven_routes() == []
    with pytest.raises(ProductionTargetRefusedError):
        guard.pin(HOST, 8080, service="orders-api", context=CONTEXT)


def test_a_host_resolving_to_a_wildcard_is_never_probed(answers):
    answers[HOST] = ["0.0.0.0"]
    guard = ProductionGuard()
    send, sent = stamped_only_with_context("orders-abc123")
    proof = prove_routes(manifest(), guard=guard, sandbox_id="orders-abc123", send=send)
    assert proof["proven"] is False and sent == []
    assert "wildcard" in proof["routes"]["orders-api"]["reason"]
