"""The only code that talks to the Kubernetes API (official `kubernetes` client, plain JSON dicts).

Submodules: `client` (ApiClient loading), `resources` (descriptors/paths), `rest`
(CRUD + ApiError), `cache` (list+watch caches), `status` (409-safe writers),
`events` (EventRecorder), `lease` (LeaseLock, LeaderElector), `backoff`.
"""
