"""Loopback stand-ins for a routing chain: the caller's sidecar (``MeshFront``) and each tier's pod
with its sidecar's inbound filters (``TierServer``); the servers' plumbing is in ``loopback``.

They implement documented Envoy and Istio behaviour and nothing else, routing each request by the
Istio objects (VirtualService, DestinationRule, EnvoyFilter) stored in the Kubernetes API
emulator at that moment.
Each behaviour cites its doc; ``Unsupported`` is raised for configuration this stand-in does not
model, instead of guessing. Two deliberate simplifications, both keeping Envoy's shares: weighted
clusters are picked by smooth weighted round robin instead of Envoy's random pick, and a fault's
percentage hits an exact share of matching requests (request i is hit when
floor((i+1)p) > floor(ip)); one host per cluster.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from fractions import Fraction
from typing import Any

from loopback import (
    Config,
    FakePrometheus,
    Server,
    Unsupported,
    fraction,
    header_matches,
    hit,
    seconds,
    selects,
)

__all__ = ["FakePrometheus", "MeshFront", "TierServer", "Unsupported"]
AGGREGATE = "envoy.clusters.aggregate"
PREVIOUS_PRIORITIES = "envoy.retry_priorities.previous_priorities"
FAULT_FILTER = "envoy.filters.http.fault"


class TierServer(Server):
    """One tier's pod: its sidecar's inbound HTTP fault filters, then the application.

    The application stamps ``x-mesh-routing-tier`` on its answers and keeps an idempotency store
    (``store``, shared by the tiers when the routing API shares it). Failure and bad bodies hit
    an exact share of DISTINCT idempotency keys, so every try of a failing key fails."""

    def __init__(
        self,
        name: str,
        *,
        namespace: str = "default",
        labels: dict[str, str] | None = None,
        config: Config | None = None,
        store: dict[str, tuple[int, dict[str, str], bytes]] | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.namespace = namespace
        self.labels = labels or {}
        self.config = config
        self.store = store
        self.fail_ratio = Fraction(0)
        self.invalid_ratio = Fraction(0)
        self.delay = 0.0
        self.nondeterministic = False
        self.requests = 0  # reached the application
        self.inbound = 0  # reached the sidecar
        self.faulted = 0
        self.keys: dict[str, int] = {}
        self.counters: dict[str, int] = {}

    def _next(self, counter: str) -> int:
        with self.lock:
            value = self.counters.get(counter, 0)
            self.counters[counter] = value + 1
            return value

    def _faults(self) -> list[dict[str, Any]]:
        """HTTPFault configs inserted into this pod's inbound HTTP filter chain."""
        found = []
        for obj in self.config("envoyfilters") if self.config else []:
            if not selects(obj, self.namespace, self.labels):
                continue
            for patch in obj["spec"].get("configPatches") or []:
                value = (patch.get("patch") or {}).get("value") or {}
                if patch.get("applyTo") != "HTTP_FILTER" or value.get("name") != FAULT_FILTER:
                    continue
                if (patch.get("match") or {}).get("context") not in ("SIDECAR_INBOUND", "ANY"):
                    continue  # an outbound filter is on the caller's side, not this pod's
                found.append((obj["metadata"]["resourceVersion"], value["typed_config"]))
        return found

    def _inbound_fault(self, headers: dict[str, str]):
        """Envoy HTTP fault filter: "The fault injection filter can be applied selectively to
        requests that match a set of headers specified in the fault filter config"
        (HTTPFault.headers); each fault on its own percentage, the delay before the abort
        (envoy fault_filter.cc decides the abort in postDelayInjection)."""
        for version, fault in self._faults():
            if not header_matches(fault.get("headers") or [], headers):
                continue
            delay, abort = fault.get("delay"), fault.get("abort")
            if delay and hit(self._next(f"{version}/delay"), fraction(delay["percentage"])):
                time.sleep(seconds(delay["fixed_delay"]))
            if abort and hit(self._next(f"{version}/abort"), fraction(abort["percentage"])):
                with self.lock:
                    self.faulted += 1
                return abort["http_status"], {}, b"fault filter abort"
        return None

    def handle(self, method, path, headers, body):
        with self.lock:
            self.inbound += 1
        aborted = self._inbound_fault(headers)
        if aborted is not None:
            return aborted
        key = headers.get("x-idempotency-key", "")
        if self.store is not None and key:
            with self.lock:
                if key in self.store:
                    return self.store[key]
        with self.lock:
            self.requests += 1
            served = self.requests
            index = self.keys.setdefault(key, len(self.keys))
        if self.delay:
            time.sleep(self.delay)
        stamp = {"Content-Type": "application/json", "x-mesh-routing-tier": self.name}
        if hit(index, self.fail_ratio):
            return 503, stamp, b'{"error": "upstream failed"}'
        answer: dict[str, Any] = {"sku": "drill-probe", "price": 12.5, "currency": "EUR"}
        if hit(index, self.invalid_ratio):
            answer["price"] = "n/a"
        if self.nondeterministic:
            answer["served"] = served
        result = (200, stamp, json.dumps(answer).encode())
        if self.store is not None and key:
            with self.lock:
                result = self.store.setdefault(key, result)
        return result


class _Outlier:
    """Envoy outlier detection, consecutive 5xx (arch_overview/upstream/outlier): a host with
    ``consecutive_5xx`` 5xx in a row (an upstream 5xx, or a reset or timeout the router turns
    into one) is ejected for base_ejection_time x times ejected; at least one host is ejected
    whatever max_ejection_percent says. State is per cluster and per proxy."""

    def __init__(self) -> None:
        self.consecutive: dict[str, int] = {}
        self.ejected_until: dict[str, float] = {}
        self.ejections: dict[str, int] = {}

    def healthy(self, cluster: str) -> bool:
        return time.monotonic() >= self.ejected_until.get(cluster, 0.0)

    def record(self, cluster: str, failed: bool, policy: dict[str, Any] | None) -> None:
        if not failed:
            self.consecutive[cluster] = 0
            return
        self.consecutive[cluster] = self.consecutive.get(cluster, 0) + 1
        if policy is None:
            return
        limit = int(policy.get("consecutive5xxErrors", 5))
        if self.consecutive[cluster] >= limit and self.healthy(cluster):
            self.ejections[cluster] = self.ejections.get(cluster, 0) + 1
            base = seconds(policy.get("baseEjectionTime", "30s")) or 30.0
            self.ejected_until[cluster] = time.monotonic() + base * self.ejections[cluster]
            self.consecutive[cluster] = 0


class MeshFront(Server):
    """The caller's sidecar for one host (``host:port``), as the drill's traffic meets it."""

    def __init__(
        self,
        *,
        config: Config,
        upstreams: dict[str, TierServer],
        host: str,
        port: int,
        namespace: str,
        labels: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.upstreams = upstreams  # Istio outbound cluster name -> the tier's pod
        self.host, self.port = host, port
        self.namespace = namespace
        self.labels = labels or {}
        self.outlier = _Outlier()
        self.counters: dict[str, int] = {}
        self.wrr: dict[str, list[int]] = {}
        self.seen: list[tuple[str | None, str, str | None]] = []  # (context, rule, tier)

    def _next(self, counter: str) -> int:
        with self.lock:
            value = self.counters.get(counter, 0)
            self.counters[counter] = value + 1
            return value

    # --- configuration, as Istio renders it ------------------------------------------------
    def _rule(self, headers: dict[str, str]) -> dict[str, Any]:
        """The VirtualService for the host; its first http rule whose match fits (Istio
        VirtualService reference: "The first rule matching an incoming request is used")."""
        services = [v for v in self.config("virtualservices") if self.host in v["spec"]["hosts"]]
        if len(services) != 1:
            raise Unsupported(f"{len(services)} VirtualServices for {self.host}")
        for rule in services[0]["spec"].get("http") or []:
            matches = rule.get("match")
            if not matches:
                return rule
            for match in matches:
                if set(match) - {"headers"}:
                    raise Unsupported(f"match {match}")
                conds = match.get("headers") or {}
                if any(set(c) != {"exact"} for c in conds.values()):
                    raise Unsupported(f"header match {conds}")
                if all(headers.get(n) == c["exact"] for n, c in conds.items()):
                    return rule
        raise Unsupported("no rule matched: Envoy would answer 404")

    def _outlier_policy(self, cluster: str) -> dict[str, Any] | None:
        """A DestinationRule's trafficPolicy.outlierDetection on the host's outbound cluster."""
        host = cluster.split("|")[-1]
        for rule in self.config("destinationrules"):
            if rule["spec"]["host"] == host:
                return (rule["spec"].get("trafficPolicy") or {}).get("outlierDetection")
        return None

    def _envoy_filters(self) -> list[dict[str, Any]]:
        return [f for f in self.config("envoyfilters") if selects(f, self.namespace, self.labels)]

    def _route_override(self, rule_name: str) -> tuple[dict[str, Any], dict[str, list[str]]]:
        """EnvoyFilter HTTP_ROUTE MERGE on this host's vhost and the route Istio named after the
        VirtualService http route's ``name``; CLUSTER ADD of aggregate clusters."""
        override: dict[str, Any] = {}
        aggregates: dict[str, list[str]] = {}
        for obj in self._envoy_filters():
            for patch in obj["spec"].get("configPatches") or []:
                op = (patch.get("patch") or {}).get("operation")
                value = (patch.get("patch") or {}).get("value") or {}
                if patch.get("applyTo") == "CLUSTER" and op == "ADD":
                    kind = (value.get("cluster_type") or {}).get("name")
                    if kind != AGGREGATE:
                        raise Unsupported(f"added cluster type {kind}")
                    aggregates[value["name"]] = value["cluster_type"]["typed_config"]["clusters"]
                elif patch.get("applyTo") == "HTTP_ROUTE" and op == "MERGE":
                    vhost = patch["match"]["routeConfiguration"]["vhost"]
                    if vhost.get("name") == f"{self.host}:{self.port}" and (
                        vhost.get("route", {}).get("name") == rule_name
                    ):
                        override = value.get("route") or {}
                elif patch.get("applyTo") != "HTTP_FILTER":
                    raise Unsupported(f"EnvoyFilter patch {patch.get('applyTo')} {op}")
        return override, aggregates

    def _weighted(self, rule: dict[str, Any]) -> int:
        """Envoy weighted clusters: "The request is routed to one of the upstream clusters based
        on weights assigned to each cluster" (RouteAction.weighted_clusters): ONE cluster per
        request; smooth weighted round robin gives the same shares, exactly."""
        weights = [d.get("weight", 100 if len(rule["route"]) == 1 else 0) for d in rule["route"]]
        with self.lock:
            state = self.wrr.setdefault(rule.get("name", "?"), [0] * len(weights))
            best = None
            for i, weight in enumerate(weights):
                state[i] += weight
                if weight and (best is None or state[i] > state[best]):
                    best = i
            state[best] -= sum(weights)
        return best

    # --- one request ----------------------------------------------------------------------
    def handle(self, method, path, headers, body):
        rule = self._rule(headers)
        name = rule.get("name", "?")
        fault = rule.get("fault")
        retries = rule.get("retries") or {}
        timeout = seconds(rule.get("timeout"))  # Istio: "default is disabled"
        if fault is not None:
            # Istio HTTPRoute.fault: "Note that timeouts or retries will not be enabled when
            # faults are enabled on the client side."
            retries, timeout = {}, None
            if "delay" in fault:
                ratio = Fraction(str(fault["delay"]["percentage"]["value"])) / 100
                if hit(self._next(f"{name}/delay"), ratio):
                    time.sleep(seconds(fault["delay"]["fixedDelay"]))
            if "abort" in fault:
                ratio = Fraction(str(fault["abort"]["percentage"]["value"])) / 100
                if hit(self._next(f"{name}/abort"), ratio):
                    self._saw(headers, name, None)
                    return fault["abort"]["httpStatus"], {}, b"fault filter abort"
        override, aggregates = self._route_override(name)
        destination = None
        if override.get("cluster") in aggregates:
            clusters = aggregates[override["cluster"]]
            if len(rule["route"]) == 1:
                # One destination is rendered as route.cluster, not weighted_clusters: its headers
                # have no per-cluster place, so they apply to every answer of the route (an
                # assumption drillkit never relies on: the drill rule carries no headers).
                destination = rule["route"][0]
        elif "cluster" in override:
            raise Unsupported(f"route to cluster {override['cluster']}")
        else:
            destination = rule["route"][self._weighted(rule)]
            d = destination["destination"]
            clusters = [f"outbound|{d['port']['number']}||{d['host']}"]
        priority = (override.get("retry_policy") or {}).get("retry_priority") or {}
        if priority and priority.get("name") != PREVIOUS_PRIORITIES:
            raise Unsupported(f"retry priority {priority.get('name')}")
        status, out, content = self._tries(
            method, path, headers, body, clusters, retries, timeout, bool(priority)
        )
        if destination is not None:
            # Istio Destination.headers.response.set (HeaderOperations): set on the answer.
            response = (destination.get("headers") or {}).get("response") or {}
            if set(response) - {"set"}:
                raise Unsupported(f"response header operations {response}")
            out = {**out, **response.get("set", {})}
        self._saw(headers, name, out.get("x-mesh-routing-tier"))
        return status, out, content

    def _saw(self, headers: dict[str, str], rule: str, tier: str | None) -> None:
        with self.lock:
            self.seen.append((headers.get("x-drill-context"), rule, tier))

    def _pick(self, clusters: list[str], excluded: set[int]) -> int:
        """Aggregate cluster: the clusters' priorities linearized in list order; the load goes to
        the first healthy priority (one host each: 100% or 0% healthy; priority levels,
        load_balancing docs); ``excluded`` by previous_priorities, reset when no healthy
        priority is left ("Each priority attempted will be excluded until there are no healthy
        priorities left, at which point the list of attempted priorities will be reset")."""
        with self.lock:
            healthy = [i for i, c in enumerate(clusters) if self.outlier.healthy(c)]
        left = [i for i in healthy if i not in excluded]
        if not left:
            excluded.clear()
            left = healthy
        return left[0] if left else 0  # nothing healthy: panic mode, P0

    def _tries(self, method, path, headers, body, clusters, retries, timeout, by_priority):
        """Envoy router retries: ``attempts`` retries after the first try (Istio HTTPRetry),
        each cut at perTryTimeout, all inside the route timeout: "Envoy will not retry when a
        request exceeds x-envoy-upstream-rq-timeout-ms (resulting in a 504 error code)"; a
        try is retried only when its outcome fits ``retryOn`` (router_filter x-envoy-retry-on).
        """
        tries = int(retries.get("attempts", 0)) + 1 if retries else 1
        per_try = seconds(retries.get("perTryTimeout")) if retries else None
        retry_on = set((retries.get("retryOn") or "").split(",")) - {""}
        unknown = retry_on - {"5xx", "gateway-error", "reset", "connect-failure"}
        if unknown:
            raise Unsupported(f"retryOn {unknown}")
        deadline = None if timeout is None else time.monotonic() + timeout
        excluded: set[int] = set()
        outgoing = {k: v for k, v in headers.items() if k not in ("host", "content-length")}
        result = (503, {}, b"no healthy upstream")
        for _ in range(tries):
            budget = [
                t
                for t in (per_try, None if deadline is None else deadline - time.monotonic())
                if t is not None
            ]
            if budget and min(budget) <= 0:
                return 504, {}, b"upstream request timeout"
            index = self._pick(clusters, excluded) if len(clusters) > 1 else 0
            if by_priority:
                excluded.add(index)  # previous_priorities, update_frequency 1
            cluster = clusters[index]
            server = self.upstreams[cluster]
            outcome = None
            request = urllib.request.Request(
                server.url + path, data=body or None, method=method, headers=outgoing
            )
            try:
                with urllib.request.urlopen(request, timeout=min(budget) if budget else 60) as r:
                    result = (r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
            except urllib.error.HTTPError as exc:
                result = (exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())
            except (TimeoutError, urllib.error.URLError) as exc:
                reason = getattr(exc, "reason", exc)
                outcome = (
                    "connect-failure" if isinstance(reason, ConnectionRefusedError) else "timeout"
                )
                result = (504 if outcome == "timeout" else 503, {}, b"upstream request timeout")
            status = result[0]
            failed = outcome is not None or status >= 500
            with self.lock:
                self.outlier.record(cluster, failed, self._outlier_policy(cluster))
            if not failed:
                break
            if deadline is not None and time.monotonic() >= deadline:
                return 504, {}, b"upstream request timeout"
            retriable = (
                "5xx" in retry_on
                or (
                    "gateway-error" in retry_on
                    and (outcome == "timeout" or status in (502, 503, 504))
                )
                or ("reset" in retry_on and outcome == "timeout")
                or ("connect-failure" in retry_on and outcome == "connect-failure")
            )
            if not retriable:
                break
        result = (
            result[0],
            {
                k: v
                for k, v in result[1].items()
                if k not in ("content-length", "connection", "date", "server", "transfer-encoding")
            },
            result[2],
        )
        return result
