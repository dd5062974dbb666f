"""The drill's fallback and its faults as Istio EnvoyFilters: an Envoy aggregate cluster of the
tiers for the drill rule only, and an HTTP fault filter at the primary's inbound side. Pure.

Why this mechanism (each point from the projects' documentation):

- A VirtualService's weighted destinations are a SPLIT, not a fallback: "The request is routed
  to one of the upstream clusters based on weights assigned to each cluster" (Envoy
  ``RouteAction.weighted_clusters``), and weighted clusters "split the traffic across clusters,
  but all attempts try the same cluster list" (Envoy, priority group cluster specifier, "Why this
  is needed"), so retries never reach another tier.
- An Envoy aggregate cluster is made for this: "An aggregate cluster allows you to set up
  failover between multiple upstream clusters ... The ordering of these clusters in the clusters
  list implicitly defines the fallback priority" (arch_overview/upstream/aggregate_cluster). Its
  priorities are the tiers' priorities linearized, so the route's
  ``retry_priority: envoy.retry_priorities.previous_priorities`` sends each retry to the next
  tier ("Each priority attempted will be excluded until there are no healthy priorities left",
  PreviousPrioritiesConfig). Aggregate clusters honour retry priorities since Envoy 1.15
  (envoyproxy/envoy#11102, fixing #11021; Envoy's own aggregate integration test routes with
  exactly this retry_priority). Outlier ejection of a tier's hosts moves the priority load to
  the next tier without any retry (priority levels, arch_overview/upstream/load_balancing).
  Istio has no field for either, so an EnvoyFilter adds the cluster (CLUSTER ADD, as in
  istio/istio#23909) and merges it into the drill rule's Envoy route, found by the name Istio
  gives it: the VirtualService http route's ``name`` (EnvoyFilter ``RouteConfigurationMatch``).
- Rejected: Istio ``localityLbSetting.failoverPriority`` needs one Service spanning the tiers
  and orders endpoints by labels matching the CLIENT's labels, which would change production's
  own Service; Envoy's composite cluster and priority-group cluster specifier (retry-aware
  cluster choice) are too new for the Envoy that Istio ships.
- Faults never go on the caller's route: Istio documents for ``HTTPRoute.fault``: "Note that
  timeouts or retries will not be enabled when faults are enabled on the client side." (istio.io
  reference/config/networking/virtual-service/#HTTPRoute). The fault is an Envoy HTTP fault
  filter on the PRIMARY's inbound listener (SIDECAR_INBOUND, workloadSelector = its pods),
  scoped by the filter's ``headers``: "The fault injection filter can be applied selectively to
  requests that match a set of headers specified in the fault filter config" (HTTPFault). Only
  requests carrying this run's signed ``x-drill-context`` are faulted; the caller's retries and
  timeouts stay on, so they are what the drill measures.

Production's distribution does not change: the production rule is not touched, the EnvoyFilter
merges into the route named ``drill`` only (matched by the exact signed context), and it adds a
cluster under a new name. Outlier-detection state is kept per client proxy and cluster, so the
drill's faults count only in the proxy that sends drill traffic (the drill's own pod, a sidecar
of the mesh: SIDECAR_OUTBOUND); ``route.drill_client`` limits the filter to those pods.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drillkit.chain.model import CONTEXT_HEADER, FaultPhase, RouteConfig, TierTarget
from drillkit.k8s.route_objects import duration

ENVOY_FILTER_VERSION = "networking.istio.io/v1alpha3"  # the only version of the EnvoyFilter CRD
AGGREGATE_TYPE = "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig"
PREVIOUS_PRIORITIES = "envoy.retry_priorities.previous_priorities"
PREVIOUS_PRIORITIES_TYPE = (
    "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3."
    "PreviousPrioritiesConfig"
)
FAULT_FILTER = "envoy.filters.http.fault"
FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
HCM = "envoy.filters.network.http_connection_manager"
ROUTER = "envoy.filters.http.router"
# FractionalPercent with a MILLION denominator: 4 decimals of a percent, exactly.
MILLION = 1_000_000


def istio_cluster(tier: TierTarget) -> str:
    """The name Istio gives a host's outbound cluster: ``outbound|<port>|<subset>|<host>``."""
    return f"outbound|{tier.port}||{tier.host}"


def aggregate_name(config: RouteConfig) -> str:
    return f"drillkit|{config.name}|chain"


def fallback_name(config: RouteConfig) -> str:
    return f"{config.name}-chain-fallback"


def fault_name(config: RouteConfig) -> str:
    return f"{config.name}-primary-fault"


def _selector(labels: Mapping[str, str] | None) -> dict[str, Any]:
    return {"workloadSelector": {"labels": dict(labels)}} if labels else {}


def fallback_filter(config: RouteConfig, meta: dict[str, Any]) -> dict[str, Any]:
    """The aggregate cluster of the tiers (in chain order) and the drill route's use of it."""
    aggregate = {
        "name": aggregate_name(config),
        "connect_timeout": duration(config.pool.connect_timeout),
        "lb_policy": "CLUSTER_PROVIDED",
        "cluster_type": {
            "name": "envoy.clusters.aggregate",
            "typed_config": {
                "@type": AGGREGATE_TYPE,
                "clusters": [istio_cluster(t) for t in config.tiers],
            },
        },
    }
    route = {
        "cluster": aggregate_name(config),
        "retry_policy": {
            "retry_priority": {
                "name": PREVIOUS_PRIORITIES,
                "typed_config": {"@type": PREVIOUS_PRIORITIES_TYPE, "update_frequency": 1},
            }
        },
    }
    return {
        "apiVersion": ENVOY_FILTER_VERSION,
        "kind": "EnvoyFilter",
        "metadata": {**meta, "name": fallback_name(config)},
        "spec": {
            **_selector(config.drill_client),
            "configPatches": [
                {
                    "applyTo": "CLUSTER",
                    "match": {"context": "SIDECAR_OUTBOUND"},
                    "patch": {"operation": "ADD", "value": aggregate},
                },
                {
                    "applyTo": "HTTP_ROUTE",
                    "match": {
                        "context": "SIDECAR_OUTBOUND",
                        "routeConfiguration": {
                            "vhost": {
                                "name": f"{config.host}:{config.port}",
                                "route": {"name": "drill"},
                            }
                        },
                    },
                    "patch": {"operation": "MERGE", "value": {"route": route}},
                },
            ],
        },
    }


def fractional(percent: Any) -> dict[str, Any]:
    return {"numerator": int(percent * 10_000), "denominator": "MILLION"}


def http_fault(phase: FaultPhase, context_value: str) -> dict[str, Any]:
    """Envoy's HTTPFault for one phase, matching only the signed drill context."""
    fault: dict[str, Any] = {
        "@type": FAULT_TYPE,
        "headers": [{"name": CONTEXT_HEADER, "string_match": {"exact": context_value}}],
    }
    if phase.delay is not None:
        fault["delay"] = {
            "fixed_delay": duration(phase.delay),
            "percentage": fractional(phase.delay_percent),
        }
    if phase.abort_percent is not None:
        fault["abort"] = {
            "http_status": phase.abort_status,
            "percentage": fractional(phase.abort_percent),
        }
    return fault


def fault_filter(
    config: RouteConfig, phase: FaultPhase, context_value: str, meta: dict[str, Any]
) -> dict[str, Any]:
    """The fault filter on the primary's inbound listener, before the router."""
    primary = config.tier("primary")
    return {
        "apiVersion": ENVOY_FILTER_VERSION,
        "kind": "EnvoyFilter",
        "metadata": {**meta, "name": fault_name(config), "namespace": primary_namespace(config)},
        "spec": {
            **_selector(primary.labels),
            "configPatches": [
                {
                    "applyTo": "HTTP_FILTER",
                    "match": {
                        "context": "SIDECAR_INBOUND",
                        "listener": {
                            "filterChain": {"filter": {"name": HCM, "subFilter": {"name": ROUTER}}}
                        },
                    },
                    "patch": {
                        "operation": "INSERT_BEFORE",
                        "value": {
                            "name": FAULT_FILTER,
                            "typed_config": http_fault(phase, context_value),
                        },
                    },
                }
            ],
        },
    }


def primary_namespace(config: RouteConfig) -> str:
    from drillkit.chain.routes import service_ref

    return service_ref(config.tier("primary").host)[1]


def faults_of(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every HTTPFault an EnvoyFilter inserts (for the fault-scope guard)."""
    found = []
    for patch in (obj.get("spec") or {}).get("configPatches") or []:
        value = (patch.get("patch") or {}).get("value") or {}
        typed = value.get("typed_config") or {}
        if value.get("name") == FAULT_FILTER or typed.get("@type") == FAULT_TYPE:
            found.append(typed)
    return found
