"""Azure plumbing shared by the cache store, page-blob replicas and checks: settings, credentials,
clients and their transports, error mapping."""
