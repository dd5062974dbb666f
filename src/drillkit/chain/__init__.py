"""Routing-chain drills: prove that a routing API's upstream chain (primary -> secondary ->
static cache) holds under injected faults, and page humans when it does not.

    model       the validated spec as frozen dataclasses (tiers, timeouts, chaos, escalation)
    spec        ``kind: routing_chain`` YAML -> ChainSpec (reader, spec_route: its parts),
                every error naming the file and the field
    routes      pure builders: VirtualService + DestinationRule, or a Gateway API HTTPRoute
    envoy       pure builders of the EnvoyFilters: the aggregate-cluster fallback of the drill
                rule and the primary's inbound fault filter (why this mechanism: its docstring)
    guards      pure checks before any write: timeout budget, weights, destinations, fault scope
    apply       the only cluster I/O: apply, set a phase's fault, remove the drill rule, remediate
    occ         optimistic concurrency: patches carry the resourceVersion read; 409 -> re-read
    chaos       synthetic drill traffic per fault phase; results as ``drillkit.chaos/v1``
    measure     pure statistics: rates, percentiles, replay identity, schema validation
    prometheus  the optional fallback-rate query
    escalation  measured figures -> severity (P1, P2, P3) and the branch to take
    runbook     the steps a paged person follows
"""
