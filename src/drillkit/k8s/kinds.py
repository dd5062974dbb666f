"""The API resources drillkit reads and writes, and their REST paths. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from drillkit.exceptions import InvalidInputError


@dataclass(frozen=True)
class Kind:
    api_version: str  # "v1", "networking.k8s.io/v1", ...
    kind: str
    plural: str
    namespaced: bool = True

    def path(self, *, namespace: str | None = None, name: str | None = None) -> str:
        base = (
            f"/api/{self.api_version}"
            if "/" not in self.api_version
            else (f"/apis/{self.api_version}")
        )
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base

    def describe(self, name: str, namespace: str | None = None) -> str:
        where = f" in namespace {namespace}" if self.namespaced and namespace else ""
        return f"{self.kind} {name}{where}"


NAMESPACE = Kind("v1", "Namespace", "namespaces", namespaced=False)
SERVICE = Kind("v1", "Service", "services")
SECRET = Kind("v1", "Secret", "secrets")
POD = Kind("v1", "Pod", "pods")
CONFIG_MAP = Kind("v1", "ConfigMap", "configmaps")
DEPLOYMENT = Kind("apps/v1", "Deployment", "deployments")
ENDPOINT_SLICE = Kind("discovery.k8s.io/v1", "EndpointSlice", "endpointslices")
JOB = Kind("batch/v1", "Job", "jobs")
NETWORK_POLICY = Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies")
CNPG_CLUSTER = Kind("postgresql.cnpg.io/v1", "Cluster", "clusters")
IMAGE_CATALOG = Kind("postgresql.cnpg.io/v1", "ImageCatalog", "imagecatalogs")
CNPG_BACKUP = Kind("postgresql.cnpg.io/v1", "Backup", "backups")
OBJECT_STORE = Kind("barmancloud.cnpg.io/v1", "ObjectStore", "objectstores")
HTTP_ROUTE = Kind("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes")
REFERENCE_GRANT = Kind("gateway.networking.k8s.io/v1beta1", "ReferenceGrant", "referencegrants")
ISTIO_VERSIONS = ("v1", "v1beta1")


def virtual_service(version: str = "v1") -> Kind:
    return Kind(f"networking.istio.io/{version}", "VirtualService", "virtualservices")


def destination_rule(version: str = "v1") -> Kind:
    return Kind(f"networking.istio.io/{version}", "DestinationRule", "destinationrules")


# Kinds a user-supplied sandbox manifest may have: drillkit knows their REST paths.
MANIFEST_KINDS = {
    (k.api_version, k.kind): k for k in (SERVICE, SECRET, CONFIG_MAP, DEPLOYMENT, NETWORK_POLICY)
}


def kind_of(obj: dict) -> Kind:
    """The Kind of a user-supplied manifest, refusing kinds drillkit does not manage."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in MANIFEST_KINDS:
        allowed = ", ".join(f"{v} {k}" for v, k in MANIFEST_KINDS)
        raise InvalidInputError(
            f"sandbox manifest of kind {key[1]!r} ({key[0]}) is not supported; drillkit applies "
            f"only {allowed}"
        )
    return MANIFEST_KINDS[key]
