"""The Kubernetes backend: drill namespaces, CloudNativePG recovery sandboxes, mesh routes, GC.

Talks to the cluster only through a ``kubernetes`` ApiClient handed in by the caller (operators
get it from the cncf-kubernetes KubernetesHook); the client library is imported lazily.
"""
