"""Shared pieces of the routing-chain tests: a valid spec, the tier hosts, a view of the API
emulator's stored objects over raw HTTP (no drillkit code on the reading side), and a drill run
through drillkit's core against the loopback mesh.
"""

from __future__ import annotations

import copy
import os
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from drillkit.chain import apply
from drillkit.chain.chaos import run_chaos
from drillkit.chain.escalation import evaluate
from drillkit.chain.spec import parse_chain_spec
from drillkit.routing.context import sign_context
from drillkit.routing.guard import ProductionGuard

CRD_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "crds"
CONN_ID = "drillkit_chain_test"
NAMESPACE = "checkout"
HOSTS = {
    "primary": "checkout-api.checkout.svc.cluster.local",
    "secondary": "checkout-api.checkout-dr.svc.cluster.local",
    "static-cache": "checkout-static.edge-cache.svc.cluster.local",
}
LABELS = {"primary": {"app": "checkout-api"}, "drill_client": {"app": "drill-runner"}}
VERSIONS = {"virtualservices": "v1", "destinationrules": "v1", "envoyfilters": "v1alpha3"}
SCHEMA = {
    "type": "object",
    "required": ["sku", "price", "currency"],
    "properties": {
        "sku": {"type": "string"},
        "price": {"type": "number", "minimum": 0},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
    },
}


def chain_spec(**changes: Any) -> dict[str, Any]:
    """A valid routing-chain spec (weights 100/0/0: every fallback is one the drill caused)."""
    spec: dict[str, Any] = {
        "kind": "routing_chain",
        "drill": "checkout-routing",
        "schedule": None,
        "kubernetes_conn_id": CONN_ID,
        "context_ttl": "1h",
        "production": {"hosts": ["*.prod.example.com", "payments.payments.svc.cluster.local"]},
        "route": {
            "mesh": "istio",
            "namespace": NAMESPACE,
            "host": "checkout-router.checkout.svc.cluster.local",
            "port": 8080,
            "tiers": {
                "primary": {
                    "host": HOSTS["primary"],
                    "port": 8080,
                    "weight": 100,
                    "labels": LABELS["primary"],
                },
                "secondary": {"host": HOSTS["secondary"], "port": 8080, "weight": 0},
                "static-cache": {"host": HOSTS["static-cache"], "port": 80, "weight": 0},
            },
            "timeout": "1s",
            "retries": {"attempts": 2, "per_try_timeout": "300ms"},
            "drill_client": LABELS["drill_client"],
        },
        "chaos": {
            "url": "http://127.0.0.1:9",
            "path": "/api/v1/quote",
            "requests": 100,
            "replays": 10,
            "concurrency": 8,
            "request_timeout": "5s",
            "deadline": "2m",
            "settle": "0s",
            "phases": [{"name": "abort-10", "abort": {"percent": 10}}],
        },
    }
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **copy.deepcopy(value)}
        else:
            spec[key] = copy.deepcopy(value)
    return spec


class Cluster:
    """The server's side: raw HTTP to the emulator (no drillkit code), and a kubernetes client."""

    def __init__(self, emulator: Any, kubeconfig: Path) -> None:
        self.emulator = emulator
        self.kubeconfig = kubeconfig
        self._cache: dict[str, tuple[int, list[dict[str, Any]]]] = {}
        self._lock = threading.Lock()

    def kube(self):
        from drillkit.k8s.client import Kube, api_from_kubeconfig

        return Kube(api_from_kubeconfig(str(self.kubeconfig)))

    def request(
        self, method: str, path: str, body: Any = None, *, content_type: str = ""
    ) -> tuple[int, Any]:
        return self.emulator.request(method, path, body, content_type=content_type)

    def stored(self, plural: str, name: str, namespace: str = NAMESPACE, group: str = "") -> Any:
        group = group or "networking.istio.io/v1"
        code, body = self.request("GET", f"/apis/{group}/namespaces/{namespace}/{plural}/{name}")
        if code == 404:
            return None
        assert code == 200, body
        return body

    def objects(self, plural: str) -> list[dict[str, Any]]:
        """Every stored Istio object of ``plural``, all namespaces (what istiod would push),
        read over HTTP again only when the store has changed since the last read."""
        # One reader at a time: a burst of concurrent reads would overflow the emulator's listen
        # backlog and stall on a SYN retry.
        with self._lock:
            version = self.emulator.store.version
            cached = self._cache.get(plural)
            if cached is not None and cached[0] == version:
                return cached[1]
            path = f"/apis/networking.istio.io/{VERSIONS[plural]}/{plural}"
            code, body = self.request("GET", path)
            assert code == 200, body
            self._cache[plural] = (version, body["items"])
            return body["items"]

    def ensure_namespace(self, name: str) -> None:
        code, _ = self.request("GET", f"/api/v1/namespaces/{name}")
        if code == 404:
            body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            code, created = self.request("POST", "/api/v1/namespaces", body)
            assert code == 201, created


# --- a drill against the loopback mesh (chain_mesh), driven by drillkit's own core -----------
KEY = os.urandom(32)
SPLIT = {"primary": 95, "secondary": 4, "static-cache": 1}


class Drill:
    """One drill run through drillkit's core: applied on construction, ``run`` measures."""

    def __init__(self, cluster, front, spec: dict) -> None:
        self.spec = parse_chain_spec(spec)
        self.route = self.spec.route
        self.guard = ProductionGuard.from_spec(self.spec.production)
        self.kube = cluster.kube()
        self.cluster = cluster
        self.front = front
        self.drill_id = str(uuid.uuid4())
        self.context = sign_context(
            drill_id=self.drill_id, environment="drill", key=KEY, ttl_seconds=3600
        )
        self.applied = apply.apply_chain(
            self.kube,
            self.route,
            guard=self.guard,
            context_value=self.context,
            drill_id=self.drill_id,
            expires_at="2026-11-21T12:00:00Z",
        )

    def set_fault(self, phase) -> None:
        apply.set_fault(
            self.kube, self.route, guard=self.guard, context_value=self.context, phase=phase
        )

    def run(self, prometheus=None, set_fault=None) -> tuple[dict, dict]:
        result = run_chaos(
            self.spec.chaos,
            budget=self.route.timeout,
            context_value=self.context,
            drill_id=self.drill_id,
            set_fault=set_fault or self.set_fault,
            prometheus=prometheus,
        )
        return result, evaluate(result, self.spec.escalation, self.route)


def drill(cluster, front, *, phases=None, route=None, weights=None, **chaos) -> Drill:
    spec = chain_spec(chaos={"url": front.url, **chaos})
    if phases is not None:
        spec["chaos"]["phases"] = phases
    spec["route"].update(route or {})
    for tier, weight in (weights or {}).items():
        spec["route"]["tiers"][tier]["weight"] = weight
    return Drill(cluster, front, spec)


def get(front, headers: dict | None = None) -> tuple[int, str | None]:
    """One request through a caller's sidecar: (status, the tier that stamped the answer)."""
    request = urllib.request.Request(front.url + "/api/v1/quote", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("x-mesh-routing-tier")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("x-mesh-routing-tier")


def split(front, n: int = 100) -> dict[str, int]:
    """Which tiers answered ``n`` production requests (no drill context), all of them 200."""
    counts: dict[str, int] = {}
    for _ in range(n):
        status, tier = get(front)
        assert status == 200
        counts[tier] = counts.get(tier, 0) + 1
    return counts
