"""Kubernetes adapters: the drill operators with a cluster connection, and drill garbage collection.

The connection comes from the cncf-kubernetes ``KubernetesHook`` (its kubeconfig extras); the core
gets the hook's ApiClient for the duration of ``execute`` and does all cluster I/O itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from drillkit.operators._common import as_bool, run_core
from drillkit.operators.checks import SmokeTestOperator
from drillkit.operators.restore import (
    PITRSelectOperator,
    ProvisionSandboxOperator,
    TeardownOperator,
)
from drillkit.operators.routing import ApplyDrillRouteOperator

if TYPE_CHECKING:
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

DEFAULT_CONN_ID = "kubernetes_default"


class KubernetesConnectionMixin:
    """Runs the wrapped operator's ``execute`` with the hook's ApiClient as the drill's cluster."""

    kubernetes_conn_id: str

    @cached_property
    def hook(self) -> KubernetesHook:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        return KubernetesHook(conn_id=self.kubernetes_conn_id)

    def execute(self, context: Any) -> Any:
        from drillkit.k8s.client import cluster

        with cluster(self.hook.api_client):
            return super().execute(context)  # type: ignore[misc]


class KubernetesPITRSelectOperator(KubernetesConnectionMixin, PITRSelectOperator):
    """PITRSelectOperator for catalog ``kind: cnpg`` (Backup objects of a CloudNativePG cluster).

    :param kubernetes_conn_id: Airflow connection of the cluster
    """

    def __init__(self, *, kubernetes_conn_id: str = DEFAULT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kubernetes_conn_id = kubernetes_conn_id


class KubernetesProvisionSandboxOperator(KubernetesConnectionMixin, ProvisionSandboxOperator):
    """ProvisionSandboxOperator for ``kind: kubernetes``: namespace, NetworkPolicy, Cluster.

    :param kubernetes_conn_id: Airflow connection of the cluster
    """

    def __init__(self, *, kubernetes_conn_id: str = DEFAULT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kubernetes_conn_id = kubernetes_conn_id


class KubernetesApplyDrillRouteOperator(KubernetesConnectionMixin, ApplyDrillRouteOperator):
    """ApplyDrillRouteOperator that can apply istio / gateway_api routes and read the sandbox's
    Services.

    :param kubernetes_conn_id: Airflow connection of the cluster
    """

    def __init__(self, *, kubernetes_conn_id: str = DEFAULT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kubernetes_conn_id = kubernetes_conn_id


class KubernetesSmokeTestOperator(KubernetesConnectionMixin, SmokeTestOperator):
    """SmokeTestOperator that reaches a kubernetes sandbox's restored database: the drill's
    credentials are read from its Secrets through the API when the checks run, and the database
    is reached in the cluster (TLS) or through a port-forward (``drillkit.k8s.access``).

    :param kubernetes_conn_id: Airflow connection of the cluster
    """

    def __init__(self, *, kubernetes_conn_id: str = DEFAULT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kubernetes_conn_id = kubernetes_conn_id


class KubernetesTeardownOperator(KubernetesConnectionMixin, TeardownOperator):
    """TeardownOperator for a kubernetes sandbox: routes removed, namespace deleted (or kept).

    :param kubernetes_conn_id: Airflow connection of the cluster
    """

    def __init__(self, *, kubernetes_conn_id: str = DEFAULT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kubernetes_conn_id = kubernetes_conn_id


class DrillGarbageCollectOperator(BaseOperator):
    """Remove drill-owned routes, namespaces and local sandboxes whose expiry has passed.

    :param kubernetes_conn_id: cluster to collect; empty collects local sandboxes only
        (templated)
    :param local: also collect local sandboxes (drillkit.sandbox.gc.collect_local)
    :param dry_run: report what is due without deleting (templated)
    """

    template_fields: Sequence[str] = ("kubernetes_conn_id", "dry_run")
    ui_color = "#f4dede"

    def __init__(
        self,
        *,
        kubernetes_conn_id: str | None = DEFAULT_CONN_ID,
        local: bool = True,
        dry_run: Any = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.kubernetes_conn_id = kubernetes_conn_id
        self.local = local
        self.dry_run = dry_run

    def execute(self, context: Any) -> dict[str, Any]:
        dry_run = as_bool(self.dry_run)

        def collect() -> list[dict[str, Any]]:
            removed: list[dict[str, Any]] = []
            if self.local:
                from drillkit.sandbox.gc import collect_local

                removed += collect_local(dry_run=dry_run)
            if self.kubernetes_conn_id:
                from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

                from drillkit.k8s.client import Kube
                from drillkit.k8s.gc import collect as collect_k8s

                api = KubernetesHook(conn_id=self.kubernetes_conn_id).api_client
                removed += collect_k8s(Kube(api), dry_run=dry_run)
            return removed

        removed = run_core(context, collect)
        verb = "would remove" if dry_run else "removed"
        for entry in removed:
            self.log.info("%s %s %s (%s)", verb, entry["kind"], entry["id"], entry["reason"])
        self.log.info("%s %d expired object(s)", verb, len(removed))
        return {"dry_run": dry_run, "removed": removed, "count": len(removed)}
