"""``kubellm run``: the operator's reconcile logic without a cluster.

The same manifests users ``kubectl apply`` are validated with the CRDs' own models, turned into
the same children by the same builders (:mod:`kubellm.operator.manifests`), and their pods run
here as local ``kubellm`` processes: a PersistentVolumeClaim is a folder, a Service is a local
port, a report ConfigMap is a folder the runtime writes into. Status is computed by the
operator's own functions (:mod:`kubellm.operator.status`) and printed with the CRDs' printer
columns, as ``kubectl get`` would show it.
"""
