"""Test and planned migration: writing a server's disks at a recovery point."""
