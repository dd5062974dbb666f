"""The API emulator answers the real kubernetes client (through KubernetesHook) like a server."""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

# These test the emulator itself, with verbs drillkit's RBAC does not grant.
pytestmark = pytest.mark.usefixtures("unrestricted")

GROUP, VERSION = "postgresql.cnpg.io", "v1"


def _cluster(name: str, **spec) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Cluster",
        "metadata": {"name": name, "labels": {"tier": "gold"}},
        "spec": {"instances": 1, "storage": {"size": "1Gi"}, **spec},
    }


def _status(exc: ApiException) -> dict:
    return json.loads(exc.body)


def test_create_answers_201_with_server_metadata(cluster):
    core = client.CoreV1Api(cluster.api)
    _, code, _ = core.create_namespace_with_http_info({"metadata": {"name": "team-a"}})
    assert code == 201
    custom = client.CustomObjectsApi(cluster.api)
    body, code, _ = custom.create_namespaced_custom_object_with_http_info(
        GROUP, VERSION, "team-a", "clusters", _cluster("db")
    )
    assert code == 201
    meta = body["metadata"]
    assert meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"]
    assert meta["generation"] == 1
    stored = cluster.stored(f"{GROUP}/{VERSION}", "clusters", "db", "team-a")
    assert stored["metadata"]["uid"] == meta["uid"]
    ns = cluster.stored("v1", "namespaces", "team-a")
    assert ns["status"]["phase"] == "Active"
    assert ns["metadata"]["labels"]["kubernetes.io/metadata.name"] == "team-a"


def test_duplicate_is_409_already_exists_and_missing_is_404(cluster):
    core = client.CoreV1Api(cluster.api)
    core.create_namespace({"metadata": {"name": "team-a"}})
    with pytest.raises(ApiException) as dup:
        core.create_namespace({"metadata": {"name": "team-a"}})
    assert dup.value.status == 409
    assert _status(dup.value)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_config_map("nope", "team-a")
    assert missing.value.status == 404
    body = _status(missing.value)
    assert (body["kind"], body["reason"]) == ("Status", "NotFound")
    assert body["message"] == 'configmaps "nope" not found'
    with pytest.raises(ApiException) as no_ns:
        core.create_namespaced_config_map("ghost", {"metadata": {"name": "c"}})
    assert no_ns.value.status == 404
    with pytest.raises(ApiException) as gone:
        core.delete_namespaced_config_map("nope", "team-a")
    assert gone.value.status == 404


def test_label_and_field_selectors(cluster):
    core = client.CoreV1Api(cluster.api)
    core.create_namespace({"metadata": {"name": "s"}})
    for name, labels in (("a", {"app": "x", "tier": "1"}), ("b", {"app": "y"}), ("c", {})):
        core.create_namespaced_config_map("s", {"metadata": {"name": name, "labels": labels}})

    def names(**kw) -> list[str]:
        return [i.metadata.name for i in core.list_namespaced_config_map("s", **kw).items]

    assert names(label_selector="app=x") == ["a"]
    assert names(label_selector="app!=x") == ["b", "c"]
    assert names(label_selector="app in (x,y)") == ["a", "b"]
    assert names(label_selector="app notin (x)") == ["b", "c"]
    assert names(label_selector="tier") == ["a"]
    assert names(label_selector="!app") == ["c"]
    assert names(label_selector="app,tier=1") == ["a"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="metadata.name!=b") == ["a", "c"]
    every = client.CoreV1Api(cluster.api).list_config_map_for_all_namespaces(
        field_selector="metadata.namespace=s"
    )
    assert len(every.items) == 3
    with pytest.raises(ApiException) as bad:
        names(field_selector="spec.foo=1")
    assert bad.value.status == 400


def test_merge_patch_replace_conflict_and_generation(cluster):
    cluster.ensure_namespace("p")
    custom = client.CustomObjectsApi(cluster.api)
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, "p", "clusters", _cluster("db")
    )
    rv0 = int(created["metadata"]["resourceVersion"])
    labelled = custom.patch_namespaced_custom_object(
        GROUP, VERSION, "p", "clusters", "db", {"metadata": {"labels": {"tier": None, "x": "1"}}}
    )
    assert int(labelled["metadata"]["resourceVersion"]) > rv0
    assert labelled["metadata"]["generation"] == 1  # metadata changes keep the generation
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, "p", "clusters", "db", {"spec": {"instances": 2}}
    )
    stored = cluster.stored(f"{GROUP}/{VERSION}", "clusters", "db", "p")
    assert stored["spec"]["instances"] == 2
    assert stored["metadata"]["labels"] == {"x": "1"}
    assert stored["metadata"]["generation"] == 2
    stale = {**stored, "metadata": {**stored["metadata"], "resourceVersion": str(rv0)}}
    with pytest.raises(ApiException) as conflict:
        custom.replace_namespaced_custom_object(GROUP, VERSION, "p", "clusters", "db", stale)
    assert conflict.value.status == 409
    assert _status(conflict.value)["reason"] == "Conflict"
    stored["spec"]["instances"] = 3
    replaced = custom.replace_namespaced_custom_object(
        GROUP, VERSION, "p", "clusters", "db", stored
    )
    assert replaced["spec"]["instances"] == 3


def test_patch_types_as_the_client_sends_them(cluster):
    """CoreV1Api sends a dict as a strategic merge patch and a list as a JSON patch; custom
    resources refuse strategic merge (415), as a real server does."""
    core = client.CoreV1Api(cluster.api)
    core.create_namespace({"metadata": {"name": "q"}})
    core.patch_namespace("q", {"metadata": {"labels": {"a": "b"}}})
    core.patch_namespace("q", [{"op": "add", "path": "/metadata/labels/c", "value": "d"}])
    labels = cluster.stored("v1", "namespaces", "q")["metadata"]["labels"]
    assert labels["a"] == "b" and labels["c"] == "d"
    with pytest.raises(ApiException) as bad_op:
        core.patch_namespace("q", [{"op": "replace", "path": "/metadata/nope/x", "value": 1}])
    assert bad_op.value.status == 422
    custom = client.CustomObjectsApi(cluster.api)
    custom.create_namespaced_custom_object(GROUP, VERSION, "q", "clusters", _cluster("db"))
    with pytest.raises(ApiException) as refused:
        custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            "q",
            "clusters",
            "db",
            {"spec": {"instances": 2}},
            _content_type="application/strategic-merge-patch+json",
        )
    assert refused.value.status == 415


def test_status_subresource_is_separate_from_the_object(cluster):
    cluster.ensure_namespace("st")
    custom = client.CustomObjectsApi(cluster.api)
    body = _cluster("db")
    body["status"] = {"phase": "forged"}
    created = custom.create_namespaced_custom_object(GROUP, VERSION, "st", "clusters", body)
    assert "status" not in created  # status is ignored on create
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, "st", "clusters", "db", {"status": {"phase": "forged"}}
    )
    assert "status" not in cluster.stored(f"{GROUP}/{VERSION}", "clusters", "db", "st")
    custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        "st",
        "clusters",
        "db",
        {"status": {"phase": "Cluster in healthy state"}, "spec": {"instances": 5}},
    )
    stored = cluster.stored(f"{GROUP}/{VERSION}", "clusters", "db", "st")
    assert stored["status"]["phase"] == "Cluster in healthy state"
    assert stored["spec"]["instances"] == 1  # /status writes only status


def test_namespace_deletion_removes_what_it_holds(cluster):
    core = client.CoreV1Api(cluster.api)
    for name in ("doomed", "other"):
        core.create_namespace({"metadata": {"name": name}})
        core.create_namespaced_secret(name, {"metadata": {"name": "s"}, "stringData": {"k": "v"}})
        client.CustomObjectsApi(cluster.api).create_namespaced_custom_object(
            GROUP, VERSION, name, "clusters", _cluster("db")
        )
    assert cluster.stored("v1", "secrets", "s", "doomed")["data"] == {"k": "dg=="}
    deleted = core.delete_namespace("doomed")
    assert deleted.kind == "Namespace"  # the namespace itself, as a real server answers
    assert cluster.stored("v1", "namespaces", "doomed") is None
    assert cluster.stored("v1", "secrets", "s", "doomed") is None
    assert cluster.stored(f"{GROUP}/{VERSION}", "clusters", "db", "doomed") is None
    assert cluster.stored("v1", "secrets", "s", "other") is not None
    assert cluster.stored(f"{GROUP}/{VERSION}", "clusters", "db", "other") is not None


def test_schema_violation_is_422_naming_the_field(cluster, require_schemas):
    cluster.ensure_namespace("v")
    custom = client.CustomObjectsApi(cluster.api)
    with pytest.raises(ApiException) as invalid:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, "v", "clusters", _cluster("db", instances="three")
        )
    assert invalid.value.status == 422
    status = _status(invalid.value)
    assert status["reason"] == "Invalid"
    assert status["details"]["causes"][0]["field"] == "spec.instances"
    assert "spec.instances" in status["message"]
    vs = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "r"},
        "spec": {"hosts": ["a"], "http": [{"route": [{"destination": {"port": {"number": "x"}}}]}]},
    }
    with pytest.raises(ApiException) as bad_vs:
        custom.create_namespaced_custom_object(
            "networking.istio.io", "v1", "v", "virtualservices", vs
        )
    fields = [c["field"] for c in _status(bad_vs.value)["details"]["causes"]]
    assert "spec.http[0].route[0].destination.host" in fields  # required
    assert "spec.http[0].route[0].destination.port.number" in fields  # type


def test_unknown_fields_are_pruned_defaults_applied_strict_refused(cluster, require_schemas):
    cluster.ensure_namespace("u")
    custom = client.CustomObjectsApi(cluster.api)
    custom.create_namespaced_custom_object(
        GROUP, VERSION, "u", "clusters", _cluster("db", archiveEverywhere=True)
    )
    stored = cluster.stored(f"{GROUP}/{VERSION}", "clusters", "db", "u")
    assert "archiveEverywhere" not in stored["spec"]
    assert stored["spec"]["enableSuperuserAccess"] is False  # a CRD default
    assert 'unknown field "spec.archiveEverywhere"' in cluster.emulator.store.warnings
    code, body = cluster.request(
        "POST",
        cluster.path(f"{GROUP}/{VERSION}", "clusters", None, "u") + "?fieldValidation=Strict",
        _cluster("db2", archiveEverywhere=True),
    )
    assert code == 400 and "strict decoding error" in body["message"]


def test_discovery_auth_and_watch(cluster):
    assert client.VersionApi(cluster.api).get_code().major == "1"
    groups = {g.name for g in client.ApisApi(cluster.api).get_api_versions().groups}
    assert {"postgresql.cnpg.io", "networking.istio.io", "gateway.networking.k8s.io"} <= groups
    core_resources = client.CoreV1Api(cluster.api).get_api_resources().resources
    assert "namespaces" in {r.name for r in core_resources}
    unauthenticated = client.ApiClient(client.Configuration())
    unauthenticated.configuration.host = cluster.emulator.url
    with pytest.raises(ApiException) as denied:
        client.CoreV1Api(unauthenticated).list_namespace()
    assert denied.value.status == 401
    code, body = cluster.request("GET", "/api/v1/namespaces?watch=true")
    assert code == 405 and "poll with GET" in body["message"]
