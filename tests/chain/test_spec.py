"""Routing-chain specs: the example parses; every refusal names the file, the field and the fix."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
from chainkit import chain_spec

from drillkit.chain.spec import load_chain_spec, parse_chain_spec
from drillkit.spec import SpecError

pytestmark = pytest.mark.unit
EXAMPLE = Path(__file__).resolve().parents[2] / "dags" / "drills" / "checkout-routing.yaml"


def refused(spec: dict, field: str) -> str:
    with pytest.raises(SpecError) as caught:
        parse_chain_spec(spec, source="drills/chain.yaml")
    message = str(caught.value)
    assert message.startswith(f"drills/chain.yaml: {field}: "), message
    assert caught.value.details["path"] == field
    return message


def test_example_spec_parses_with_defaults_and_thresholds():
    spec = load_chain_spec(EXAMPLE)
    assert spec.dag_id == "drill_checkout_routing" and spec.paused
    assert spec.route.weights == {"primary": 100, "secondary": 0, "static-cache": 0}
    assert spec.route.tier("primary").labels == {"app": "checkout-api"}
    assert spec.route.drill_client == {"app": "airflow-worker"}
    assert spec.chaos.phases[0].abort_percent == 15
    assert spec.route.retries.tries == 3 and spec.route.retries.retry_on[0] == "5xx"
    assert [p.name for p in spec.chaos.phases][1:] == ["delay-500ms", "delay-800ms", "delay-1200ms"]
    assert [p.delay for p in spec.chaos.phases[1:]] == [0.5, 0.8, 1.2]
    assert spec.escalation.thresholds["fallback_rate"] == {"P2": Fraction(12), "P1": Fraction(25)}
    assert spec.escalation.thresholds["schema_failure_rate"] == {"P2": Fraction(5)}
    assert spec.escalation.remediation.shift_to_static_cache is False


def test_fault_phases_need_the_primary_pods_and_envoy_precision():
    spec = chain_spec()
    del spec["route"]["tiers"]["primary"]["labels"]
    message = refused(spec, "route.tiers.primary.labels")
    assert "{app: checkout-api}" in message
    spec["chaos"]["phases"] = [{"name": "baseline"}]
    parse_chain_spec(spec)  # no fault: no fault filter, no labels needed
    spec = chain_spec()
    spec["route"]["tiers"]["primary"]["host"] = "checkout-api.internal"
    refused(spec, "route.tiers.primary.host")
    spec = chain_spec(chaos={"phases": [{"name": "a", "abort": {"percent": "12.34567"}}]})
    assert "4 decimals" in refused(spec, "chaos.phases[0].abort.percent")
    spec = chain_spec()
    spec["route"]["drill_client"] = {"app": 3}
    refused(spec, "route.drill_client.app")
    spec["route"]["drill_client"] = {}
    refused(spec, "route.drill_client")


def test_kind_is_required_and_unknown_keys_are_refused():
    spec = chain_spec()
    del spec["kind"]
    assert "routing_chain" in refused(spec, "kind")
    assert "allowed here" in refused(chain_spec(tier="x"), "tier")
    spec = chain_spec()
    spec["route"]["retries"]["attemps"] = 3
    refused(spec, "route.retries.attemps")


def test_tiers_are_exactly_primary_secondary_static_cache():
    spec = chain_spec()
    del spec["route"]["tiers"]["static-cache"]
    assert "primary, secondary, static-cache" in refused(spec, "route.tiers.static-cache")
    spec = chain_spec()
    spec["route"]["tiers"]["primary"]["weight"] = 101
    refused(spec, "route.tiers.primary.weight")


def test_weights_must_sum_to_100():
    spec = chain_spec()
    spec["route"]["tiers"]["secondary"]["weight"] = 5
    message = refused(spec, "route.tiers")
    assert "sum to 105" in message and "make them sum to 100" in message


def test_per_try_timeout_strictly_below_global():
    spec = chain_spec()
    spec["route"]["retries"] = {"attempts": 0, "per_try_timeout": "1s"}
    message = refused(spec, "route.retries.per_try_timeout")
    assert "not below the global timeout 1s" in message


def test_retries_times_per_try_must_fit_the_budget_attempts_are_retries():
    spec = chain_spec()
    # 3 retries + the first try = 4 x 300ms = 1200ms > 1s.
    spec["route"]["retries"] = {"attempts": 3, "per_try_timeout": "300ms"}
    message = refused(spec, "route.retries.attempts")
    assert "4 tries x 300ms = 1200ms" in message and "at most 2 retries" in message
    spec["route"]["retries"] = {"attempts": 2, "per_try_timeout": "300ms"}  # 900ms fits
    parse_chain_spec(spec)
    spec["route"]["retries"] = {"attempts": 1, "per_try_timeout": "500ms"}  # exactly 1s fits
    parse_chain_spec(spec)


def test_unknown_retry_condition_is_named():
    spec = chain_spec()
    spec["route"]["retries"]["retry_on"] = ["5xx", "connection-failure"]
    assert "connect-failure" in refused(spec, "route.retries.retry_on[1]")


def test_chaos_url_must_not_bypass_the_chain_or_reach_production():
    spec = chain_spec()
    spec["chaos"]["url"] = "http://checkout-api.checkout.svc.cluster.local:8080"
    assert "past the chain" in refused(spec, "chaos.url")
    spec["chaos"]["url"] = "https://api.prod.example.com"
    assert "production" in refused(spec, "chaos.url")
    spec["chaos"]["url"] = "http://checkout-router.checkout.svc.cluster.local:8080"
    parse_chain_spec(spec)  # the chain's own host: drill traffic enters there by design


def test_tier_hosts_are_distinct():
    spec = chain_spec()
    spec["route"]["tiers"]["secondary"]["host"] = spec["route"]["tiers"]["primary"]["host"]
    assert "no fallback" in refused(spec, "route.tiers.secondary.host")


def test_phases_are_validated():
    spec = chain_spec()
    spec["chaos"]["phases"] = [{"name": "a", "abort": {"percent": 0}}]
    refused(spec, "chaos.phases[0].abort.percent")
    spec["chaos"]["phases"] = [{"name": "a", "delay": {"percent": 10}}]
    refused(spec, "chaos.phases[0].delay.fixed")
    spec["chaos"]["phases"] = [{"name": "a"}, {"name": "a"}]
    assert "twice" in refused(spec, "chaos.phases[1].name")
    spec["chaos"]["phases"] = []
    refused(spec, "chaos.phases")


def test_gateway_api_refuses_fault_phases_and_needs_service_hosts():
    spec = chain_spec()
    spec["route"]["mesh"] = "gateway_api"
    spec["route"]["parent"] = {"kind": "Service", "name": "checkout-router", "port": 8080}
    assert "no fault injection" in refused(spec, "chaos.phases[0]")
    spec["chaos"]["phases"] = [{"name": "baseline"}]
    parse_chain_spec(spec)
    spec["route"]["tiers"]["static-cache"]["host"] = "cdn.example.net"
    assert "Service host" in refused(spec, "route.tiers.static-cache.host")


def test_thresholds_are_percent_and_p1_above_p2():
    spec = chain_spec(escalation={"thresholds": {"fallback_rate": {"P2": 30, "P1": 30}}})
    assert "P2 would never fire" in refused(spec, "escalation.thresholds.fallback_rate.P1")
    spec = chain_spec(escalation={"thresholds": {"fallback_rate": {"P2": 101}}})
    refused(spec, "escalation.thresholds.fallback_rate.P2")
    spec = chain_spec(escalation={"thresholds": {"latency": {"P2": 1}}})
    refused(spec, "escalation.thresholds.latency")
    parsed = parse_chain_spec(chain_spec(escalation={"thresholds": {"error_rate": {}}}))
    assert parsed.escalation.thresholds["error_rate"] == {}  # switched off
    assert parsed.escalation.thresholds["fallback_rate"]["P1"] == 25  # defaults kept


def test_remediation_weights_must_sum_to_100_and_shift_to_the_cache():
    bad = {"shift_to_static_cache": True, "weights": {"primary": 50, "static-cache": 40}}
    assert "sum to 90" in refused(
        chain_spec(escalation={"remediation": bad}), "escalation.remediation.weights"
    )
    spec = chain_spec()
    spec["route"]["tiers"]["primary"]["weight"] = 80
    spec["route"]["tiers"]["static-cache"]["weight"] = 20
    spec["escalation"] = {
        "remediation": {
            "shift_to_static_cache": True,
            "weights": {"primary": 90, "static-cache": 10},
        }
    }
    assert "does not shift" in refused(spec, "escalation.remediation.weights.static-cache")


def test_response_schema_must_be_a_schema():
    spec = chain_spec()
    spec["chaos"]["response_schema"] = {"type": "objekt"}
    assert "not a valid JSON schema" in refused(spec, "chaos.response_schema")


def test_bounds_on_traffic():
    refused(chain_spec(chaos={"requests": 0}), "chaos.requests")
    refused(chain_spec(chaos={"requests": 10, "replays": 11}), "chaos.replays")
    refused(chain_spec(chaos={"deadline": "2h"}), "chaos.deadline")
    refused(chain_spec(chaos={"request_timeout": "10m", "deadline": "5m"}), "chaos.request_timeout")
    refused(
        chain_spec(chaos={"headers": {"X-Drill-Context": "forged"}}),
        "chaos.headers.X-Drill-Context",
    )
    refused(chain_spec(context_ttl="1m"), "context_ttl")


def test_unreadable_or_invalid_yaml_names_the_file(tmp_path: Path):
    with pytest.raises(SpecError, match="cannot read"):
        load_chain_spec(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: [routing_chain\n")
    with pytest.raises(SpecError, match=f"{broken}: not valid YAML"):
        load_chain_spec(broken)


def _drill_spec() -> dict:
    return {
        "drill": "orders",
        "catalog": {"kind": "local", "path": "/backups/orders"},
        "tiers": [{"name": "primary", "sandbox": {"kind": "local"}, "select": "latest"}],
        "services": {"app-db": {"kind": "postgres", "database": "app"}},
        "checks": [
            {
                "name": "rows",
                "kind": "sql",
                "target": "app-db",
                "query": "select 1",
                "expect": {"eq": 1},
            }
        ],
    }


@pytest.mark.parametrize("kind", ["drill", "routing_chain"])
@pytest.mark.parametrize(
    ("field", "value", "fix"),
    [
        ("schedule", "  ", "cron expression or preset"),
        ("schedule", 6, "cron expression or preset"),
        ("start_date", "2026-01-01", "zone"),
        ("catchup", "yes", "true or false"),
        ("paused", 1, "true or false"),
        ("tags", ["ok", ""], "non-empty strings"),
    ],
)
def test_both_spec_kinds_refuse_the_same_scheduling_fields_alike(kind, field, value, fix):
    from drillkit.spec import parse_spec

    spec = {**(_drill_spec() if kind == "drill" else chain_spec()), field: value}
    parse = parse_spec if kind == "drill" else parse_chain_spec
    with pytest.raises(SpecError) as caught:
        parse(spec, source="drills/x.yaml")
    assert str(caught.value).startswith(f"drills/x.yaml: {field}: "), caught.value
    assert fix in str(caught.value)


def test_both_spec_kinds_read_scheduling_fields_alike():
    from drillkit.spec import parse_spec

    fields = {"schedule": "@daily", "catchup": True, "tags": ["team-db"], "description": "d"}
    drill = parse_spec({**_drill_spec(), **fields})
    chain = parse_chain_spec({**chain_spec(), **fields})
    for name in ("schedule", "start_date", "catchup", "paused", "tags", "description"):
        assert getattr(drill, name) == getattr(chain, name), name
    assert drill.tags == ("team-db",) and drill.start_date.year == 2026
