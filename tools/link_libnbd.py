"""Kept for old instructions: the logic lives in the package (``godwit doctor --fix`` uses it too)."""

from godwit.checks.libnbd_link import main

if __name__ == "__main__":
    raise SystemExit(main())
