"""The errors godwit reports to people.

Every error a user can cause or meet carries a one-line message that says what is wrong, a hint
that says what to do, and the process exit code the CLI returns for it (borg's pattern: the class
owns its code). Library code raises these; the CLI prints them, never a traceback.
"""

from __future__ import annotations


class GodwitError(Exception):
    """Base of every error meant for a person. ``exit_code`` is what the CLI exits with."""

    exit_code = 1
    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(GodwitError):
    """Wrong arguments or a wrong value in a command line."""

    exit_code = 2


class ConfigError(GodwitError):
    """godwit.toml is missing, unreadable or invalid."""

    exit_code = 3


class ProjectError(GodwitError):
    """No project at the given path, or a project that cannot be opened."""

    exit_code = 3


class NotFoundError(GodwitError):
    """A server, disk, cycle or recovery point that does not exist."""

    exit_code = 4


class ConflictError(GodwitError):
    """A name that is taken, or an operation that the current state does not allow."""

    exit_code = 5


class SourceError(GodwitError):
    """A source disk that is missing, unreadable, of unknown format, or that shrank."""

    exit_code = 10


class StoreError(GodwitError):
    """The cache store failed: unreachable, full, read-only, or denied."""

    exit_code = 20


class StoreFullError(StoreError):
    exit_code = 21


class StoreReadOnlyError(StoreError):
    exit_code = 22


class ObjectMissingError(StoreError):
    """An object that the state says exists is not in the store."""

    exit_code = 23


class ObjectExistsError(StoreError):
    """A conditional create found the object already there (manifests are never overwritten)."""

    exit_code = 24


class CorruptObjectError(GodwitError):
    """A pack, manifest or journal entry failed its checksum or does not parse: never trusted."""

    exit_code = 30


class ReplicaError(GodwitError):
    """A replica disk cannot be written, or does not match what it should hold."""

    exit_code = 40


class VerifyMismatchError(ReplicaError):
    exit_code = 41


class MigrationError(GodwitError):
    exit_code = 50


class NetworkPolicyError(GodwitError):
    """Data would leave on a path the plan forbids (a private path pinned, a public address)."""

    exit_code = 60


class AssessError(GodwitError):
    """A guest could not be assessed: damaged, hostile, timed out, or libguestfs is missing."""

    exit_code = 70


def exit_codes() -> list[tuple[int, str, str]]:
    """Every error class with its exit code and summary, for the docs."""
    seen: list[tuple[int, str, str]] = []
    stack: list[type[GodwitError]] = [GodwitError]
    while stack:
        cls = stack.pop()
        doc = (cls.__doc__ or "").strip().splitlines()
        seen.append((cls.exit_code, cls.__name__, doc[0] if doc else ""))
        stack.extend(cls.__subclasses__())
    return sorted(seen)
