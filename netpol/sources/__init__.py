"""Stage 2, sources: where the agent's objects come from, as one stream of events (and a live
cluster read once, for the batch commands).

Purpose: follow a cluster (the Kubernetes API: list + watch) or a folder of manifests and hand
the agent `Snapshot`s (every object of a kind) and `Delta`s (one change), objects as the API
serves them. Decoding is the agent's, so an invalid object is reported by the code that reports
it in a manifest.

Modules:
    events      the vocabulary: Snapshot, Delta, SourceEvent, KIND_NAMES, and `Mirror`, which
                turns any mix of them into exactly the changes they imply (no kubernetes import)
    kube        list + watch per kind with the official client: pagination, bookmarks,
                resume from the last resourceVersion, relist on 410 Gone, backoff on errors;
                the cluster policies' custom resources at their first version served, a CRD
                not installed being a kind with no objects (looked for again)
    in_cluster  the client's config in a pod: KUBERNETES_SERVICE_HOST/PORT over TLS, the
                service account's CA and token (re-read before every request: rotation)
    directory   a folder of manifests, polled; a file that does not parse keeps the last good
                folder in force
    snapshot    a live cluster read once (`netpol reach --kubeconfig …`): the agent's kinds and
                versions, listed in pages as `kube` lists them, handed to the manifests' decoder
                as documents labelled `cluster CONTEXT: pods`
    backoff     capped exponential backoff with jitter

Control flow: a source's `start()` runs threads that call the sink (the agent's `submit`) with
events; `stop()` ends them. `KubeSource.run(kind)`: list → Snapshot → watch from its
resourceVersion → Delta per event … → on 410 relist, on other errors wait `Backoff` and resume;
a custom resource no version of which is served: an empty Snapshot (once confirmed), then list
again after a growing delay. `snapshot.read_snapshot(origin)`: connect (kubeconfig and context, or
in-cluster) → `kube.list_objects` per kind → a `ClusterSnapshot` of documents → `.state()`.
"""
