"""The lab API server: a kube-apiserver stand-in for tests and the lab.

NOT part of the product. It exists so the kube layer, the controller and the
speakers can be tested end to end on one machine, against the real Kubernetes
REST and watch protocol (JSON only), without a cluster. Any real API server can
replace it (`--kubeconfig`). kmock was evaluated first and does not honour
resourceVersion/410/stale-update conflicts/status subresources, hence this.

What it does, as kube-apiserver does:

* discovery (`/version`, `/api`, `/apis`, APIResourceLists with verbs/shortNames,
  `<plural>/status`), `/openapi/v3` (enough for kubectl to leave validation to the
  server), `meta.k8s.io/v1` Tables for `kubectl get` (CRD printer columns, a few
  built-in column sets);
* core v1 namespaces, nodes, services, pods (+status), configmaps, secrets, events,
  serviceaccounts, endpoints; discovery.k8s.io/v1 endpointslices;
  coordination.k8s.io/v1 leases; events.k8s.io/v1 events (separate storage);
  apiextensions.k8s.io/v1 CRDs (+status: NamesAccepted/Established) and every
  custom resource they define, at every served version, appearing in and leaving
  discovery at once;
* get/list/create/update/patch/delete/deletecollection/watch, namespaced and
  all-namespaces; one global resourceVersion counter; uid, creationTimestamp,
  generation (bumped on non-metadata/status changes), generateName; no-op updates
  do not bump the resourceVersion; 404 for a missing namespace; 409 AlreadyExists
  and Conflict (stale resourceVersion, delete preconditions); finalizers
  (deletionTimestamp, removal when the last one goes); the status subresource
  (main endpoint keeps status, /status changes only status);
* patches: merge (RFC 7386), JSON (RFC 6902), strategic merge for built-ins (an
  approximation: see `patches.py`), 415 for strategic merge on custom resources
  and for apply-patch+yaml (server-side apply is not implemented);
* label selectors (=, ==, !=, in, notin, exists, !exists), field selectors
  (metadata.name/namespace plus kube's per-kind fields; unknown ones are 400),
  limit/continue;
* watch: replay after a resourceVersion from a bounded per-resource history (like
  kube's per-type watch cache), synthetic ADDED without one (or with
  sendInitialEvents), BOOKMARKs with allowWatchBookmarks, timeoutSeconds, a single
  ERROR event with a 410 Expired Status for a too-old resourceVersion; objects
  entering/leaving a watch's selector become ADDED/DELETED;
* custom resources: structural defaulting, pruning (or 400 with
  fieldValidation=Strict), OpenAPI validation, CEL `x-kubernetes-validations`
  (via `lab.cel`), 422 Invalid with kube's message and causes;
* Services: dual-stack clusterIP allocation (10.96.0.0/16, fd00:10:96::/112),
  ipFamilies/ipFamilyPolicy defaults, nodePorts 30000-32767 (honouring
  allocateLoadBalancerNodePorts), healthCheckNodePort for LoadBalancer+Local,
  allocations kept across updates and freed on delete/type change, 422 for
  duplicate ports and taken/out-of-range addresses or ports.

RBAC (`lab.apiserver.authz`) only for requests bearing one of the server's `users`
tokens: Roles, ClusterRoles and their bindings to Users, kube's 403 message; every
other request acts as a cluster admin.

Known differences: no other authn/authz, no admission, protobuf, server-side apply,
managedFields or CRD conversion webhooks (versions share storage, only
apiVersion changes); deleting a namespace removes its contents at once (no
Terminating phase); pods are deleted at once (no graceful termination); list
serves the latest state whatever resourceVersion it names (as kube's watch cache
does for NotOlderThan), except that a resourceVersion the store has not reached
waits up to 3 s and then gets kube's 504 Timeout with cause
`ResourceVersionTooLarge` (at once with resourceVersionMatch=Exact); a watch from
such a resourceVersion stays silent until the store passes it (a watch-list with
sendInitialEvents gets the 504 as an ERROR event); there is no
`default/kubernetes` Service; continue tokens do not snapshot.

Test hooks on `LabApiServer`: `expire_history()`, `cut_watches()`,
`open_watch_count()`, `resource_version`, `call(fn)` (run on the server loop).
"""

from lab.apiserver.server import LabApiServer, listen_socket_in_netns, write_kubeconfig

__all__ = ["LabApiServer", "listen_socket_in_netns", "write_kubeconfig"]
