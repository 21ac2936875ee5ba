"""A godwit project: the folder, its configuration, the state and the cache store wired together."""
