"""`godwit.toml`: typed settings, parsed and validated once."""
