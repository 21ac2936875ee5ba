"""Checks that tell a user what to fix before a long migration: the stores, the host (doctor)."""
