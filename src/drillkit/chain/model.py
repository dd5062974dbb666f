"""A validated routing-chain drill spec: tiers, route policy, fault phases, escalation. Pure.

Rates and thresholds are exact fractions, so "above 12%" is decided without float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from drillkit.spec import ScheduledSpec

TIERS = ("primary", "secondary", "static-cache")
TIER_HEADER = "x-mesh-routing-tier"  # response header each tier stamps on its own answers
CONTEXT_HEADER = "x-drill-context"  # Envoy and Gateway API match lower-case header names
MESHES = ("istio", "gateway_api")
# Ordered from most to least urgent: P1 pages now, P2 pages in hours, P3 is "could not verify".
SEVERITIES = ("P1", "P2", "P3")
METRICS = {
    "fallback_rate": "drill requests answered by a tier other than primary (x-mesh-routing-tier)",
    "schema_failure_rate": "2xx answers whose JSON body does not fit chaos.response_schema",
    "error_rate": "requests the chain did not answer (5xx, timeout, connection failure)",
    "replay_mismatch_rate": "replayed idempotency keys whose status or body differed",
    "over_budget_rate": "requests slower than the route's global timeout",
}
DEFAULT_THRESHOLDS: dict[str, dict[str, Fraction]] = {
    "fallback_rate": {"P2": Fraction(12), "P1": Fraction(25)},
    "schema_failure_rate": {"P2": Fraction(5)},
    "error_rate": {"P1": Fraction(5)},
    "replay_mismatch_rate": {"P2": Fraction(0)},
}


@dataclass(frozen=True)
class TierTarget:
    name: str  # primary | secondary | static-cache
    host: str
    port: int
    weight: int  # production's split (Envoy weighted clusters), never the drill's fallback
    labels: dict[str, str] | None = None  # the tier's pods: where the primary's fault filter goes


@dataclass(frozen=True)
class Retries:
    """Istio semantics: ``attempts`` counts RETRIES; a request makes attempts + 1 tries."""

    attempts: int
    per_try_timeout: float
    retry_on: tuple[str, ...]

    @property
    def tries(self) -> int:
        return self.attempts + 1


@dataclass(frozen=True)
class OutlierDetection:
    consecutive_5xx: int
    interval: float
    base_ejection_time: float
    max_ejection_percent: int


@dataclass(frozen=True)
class ConnectionPool:
    max_connections: int
    connect_timeout: float
    http1_max_pending_requests: int
    http2_max_requests: int
    max_retries: int


@dataclass(frozen=True)
class GatewayParent:
    kind: str  # Service (GAMMA, mesh) or Gateway
    name: str
    namespace: str | None
    port: int | None


@dataclass(frozen=True)
class RouteConfig:
    """The chain as the mesh should route it: the production route, and the drill rule's base."""

    name: str  # the drill's name; object names derive from it
    mesh: str
    namespace: str
    host: str  # the routing API's host: the VirtualService's hosts
    port: int
    api_version: str
    tiers: tuple[TierTarget, ...]
    timeout: float
    retries: Retries
    outlier: OutlierDetection
    pool: ConnectionPool
    parent: GatewayParent | None = None
    # Labels of the pods that send drill traffic: the fallback EnvoyFilter's workloadSelector.
    drill_client: dict[str, str] | None = None

    def tier(self, name: str) -> TierTarget:
        return next(t for t in self.tiers if t.name == name)

    @property
    def weights(self) -> dict[str, int]:
        return {t.name: t.weight for t in self.tiers}


@dataclass(frozen=True)
class FaultPhase:
    """One fault profile for drill traffic; both parts optional (no fault = a baseline phase)."""

    name: str
    abort_percent: Fraction | None = None
    abort_status: int = 503
    delay: float | None = None
    delay_percent: Fraction = Fraction(100)

    @property
    def has_fault(self) -> bool:
        return self.abort_percent is not None or self.delay is not None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.abort_percent is not None:
            out["abort"] = {"percent": float(self.abort_percent), "http_status": self.abort_status}
        if self.delay is not None:
            out["delay"] = {"seconds": self.delay, "percent": float(self.delay_percent)}
        return out


@dataclass(frozen=True)
class PrometheusConfig:
    url: str
    query: str
    timeout: float


@dataclass(frozen=True)
class ChaosConfig:
    url: str  # where synthetic requests enter the mesh (the routing API's address)
    path: str
    method: str
    body: Any
    headers: dict[str, str]
    requests: int  # distinct requests per phase
    replays: int  # of those, how many keys are sent a second time
    concurrency: int
    request_timeout: float
    deadline: float  # for all phases together
    phases: tuple[FaultPhase, ...]
    response_schema: dict[str, Any] | None = None
    prometheus: PrometheusConfig | None = None
    settle: float = 0.0  # wait after setting a fault, for the mesh to push it to the proxies


@dataclass(frozen=True)
class Remediation:
    shift_to_static_cache: bool = False
    min_severity: str = "P1"
    weights: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class EscalationConfig:
    window: float
    thresholds: dict[str, dict[str, Fraction]]
    runbook_url: str | None
    runbook: tuple[str, ...]
    remediation: Remediation


@dataclass(frozen=True)
class ChainSpec(ScheduledSpec):
    """A validated routing-chain drill. ``raw`` keeps the YAML mapping for reports."""

    kubernetes_conn_id: str
    environment: str
    context_ttl: int
    production: dict[str, Any]
    route: RouteConfig
    chaos: ChaosConfig
    escalation: EscalationConfig
    raw: dict[str, Any] = field(default_factory=dict)
