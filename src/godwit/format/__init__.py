"""The cache store's on-disk format: packs, manifests, block-hash files (spec: docs/format.md)."""

FORMAT_VERSION = 1
