"""`godwit store check`: try the configured storage for real and say what to fix.

For an Azure account: reach it and read its kind (a private endpoint needs general-purpose v2),
compare its clock with ours, find the container, then create, write, read, list and delete a
scratch blob — each step its own result, so a SAS that may write but not list says exactly that.
The cache account (``lsa…``) and the optional gateway/state account (``gwsa…``, ``[gateway]``)
are checked the same way. For a local cache folder: it exists, is writable, has free space.

Checks never raise for what they find: every finding is a :class:`CheckResult`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from godwit.azure.clients import service_client
from godwit.azure.errors import map_error
from godwit.azure.settings import CONNECTION_KEYS, AzureSettings, parse_options
from godwit.azure.transport import Plane
from godwit.errors import GodwitError

if TYPE_CHECKING:
    from godwit.network.route import Router
    from godwit.project.project import Project

MAX_SKEW_SECONDS = 300  # SAS start/expiry and Entra tokens tolerate about this much
MIN_FREE_BYTES = 1 << 30
SCRATCH_PREFIX = "godwit-check"
GPV2 = "StorageV2"


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_stores(project: Project) -> list[CheckResult]:
    """Every check for the project's cache store and, if configured, its gateway account."""
    cfg = project.config
    results: list[CheckResult] = []
    if cfg.cache.kind == "local":
        results += check_local(project.cache_dir)
    else:
        results += _check_azure_section("cache", cfg.cache.options, project.root, "data", require_gpv2=True,
                                        router=project.router)
    if cfg.gateway:
        gateway = dict(cfg.gateway)
        kind = gateway.pop("kind", "azure")
        if kind != "azure":
            results.append(CheckResult("gateway: config", False, f"[gateway] kind {kind!r} is unknown",
                                       'use kind = "azure" (or leave kind out)'))
        else:
            results += _check_azure_section("gateway", gateway, project.root, "control", require_gpv2=False,
                                            router=project.router)
    return results


def check_local(folder: Path) -> list[CheckResult]:
    name = "cache"
    if not folder.is_dir():
        return [CheckResult(f"{name}: folder", False, f"{folder} does not exist",
                            "run `godwit init`, or fix [cache] path in godwit.toml")]
    out = [CheckResult(f"{name}: folder", True, str(folder))]
    scratch = folder / f".tmp-{SCRATCH_PREFIX}-{secrets.token_hex(4)}"
    try:
        scratch.write_bytes(b"godwit store check\n")
        ok = scratch.read_bytes() == b"godwit store check\n"
        out.append(CheckResult(f"{name}: writable", ok, "created, read and deleted a scratch file"
                               if ok else "a scratch file read back differently", "" if ok else "check the disk"))
    except OSError as exc:
        out.append(CheckResult(f"{name}: writable", False, f"cannot write {scratch.name}: {exc.strerror}",
                               "fix the folder's permissions or mount options"))
    finally:
        with contextlib.suppress(OSError):
            scratch.unlink()
    usage = shutil.disk_usage(folder)
    gib = usage.free / (1 << 30)
    ok = usage.free >= MIN_FREE_BYTES
    out.append(CheckResult(f"{name}: free space", ok, f"{gib:.1f} GiB free of {usage.total / (1 << 30):.1f} GiB",
                           "" if ok else "free space or move the cache to a larger disk"))
    return out


def _check_azure_section(name: str, options: dict[str, Any], root: Path, plane: Plane, *,
                         require_gpv2: bool, router: Router | None = None) -> list[CheckResult]:
    allowed = CONNECTION_KEYS if name == "gateway" else None
    try:
        settings = (parse_options(options, name, root, allowed=allowed) if allowed
                    else parse_options(options, name, root))
    except GodwitError as exc:
        return [CheckResult(f"{name}: config", False, exc.message, exc.hint or "fix godwit.toml")]
    # A check should answer quickly: a wrong path would otherwise retry for a minute or more.
    # On the route that [network] plans (router None: the section's own proxy settings).
    quick = replace(settings, router=router, retries=min(settings.retries, 1), retry_backoff_seconds=min(
        settings.retry_backoff_seconds, 0.5), connect_timeout_seconds=min(settings.connect_timeout_seconds, 10))
    return check_azure(name, quick, plane, require_gpv2=require_gpv2)


def check_azure(name: str, settings: AzureSettings, plane: Plane, *, require_gpv2: bool) -> list[CheckResult]:
    """The checks of one account and container (reached on ``plane``); see the module docstring."""
    try:
        service = service_client(settings, plane)
    except GodwitError as exc:
        return [CheckResult(f"{name}: credential", False, exc.message, exc.hint or "")]
    try:
        return _run_azure_checks(name, settings, service, require_gpv2=require_gpv2)
    finally:
        service.close()


def _problem(exc: Exception, settings: AzureSettings, what: str) -> tuple[str, str]:
    err = map_error(exc, settings, what)
    return err.message, err.hint or ""


def _run_azure_checks(name: str, settings: AzureSettings, service: Any, *, require_gpv2: bool) -> list[CheckResult]:
    out: list[CheckResult] = []
    container = service.get_container_client(settings.container)
    dates: list[str] = []

    def hook(response: Any) -> None:
        date = response.http_response.headers.get("Date")
        if date:
            dates.append(date)

    # The account: reachable, authorised, and of which kind. A container-scoped SAS may not read
    # account information at service level; the container level answers the same question.
    info: dict[str, Any] | None = None
    try:
        info = container.get_account_information(raw_response_hook=hook)
    except Exception as exc:
        message, fix = _problem(exc, settings, "reading account information")
        out.append(CheckResult(f"{name}: account", False, message, fix))
    if info is not None:
        kind = str(info.get("account_kind") or "unknown")
        detail = f"{settings.account} at {settings.account_url}: {kind}, {info.get('sku_name') or 'unknown SKU'}"
        if require_gpv2 and kind != GPV2:
            out.append(CheckResult(f"{name}: account kind", False,
                                   f"{detail}; a private endpoint needs general-purpose v2 ({GPV2})",
                                   "upgrade it: portal → storage account → Configuration → Account kind → Upgrade, "
                                   f"or `az storage account update -n {settings.account} --set kind=StorageV2`"))
        else:
            out.append(CheckResult(f"{name}: account kind", True, detail))
    out.append(_clock(name, dates))
    if info is None:
        return out

    try:
        exists = bool(container.exists())
    except Exception as exc:
        message, fix = _problem(exc, settings, "looking up the container")
        out.append(CheckResult(f"{name}: container", False, message, fix))
        return out
    if not exists:
        out.append(CheckResult(f"{name}: container", False,
                               f"container {settings.container} does not exist in account {settings.account}",
                               f"create it: az storage container create --account-name {settings.account} "
                               f"--name {settings.container} (or portal → Containers → + Container)"))
        return out
    out.append(CheckResult(f"{name}: container", True, settings.container))
    out += _permissions(name, settings, container)
    return out


def _clock(name: str, dates: list[str]) -> CheckResult:
    if not dates:
        return CheckResult(f"{name}: clock", False, "the service sent no Date header to compare with",
                           "check the account is reachable, then run the check again")
    try:
        remote = parsedate_to_datetime(dates[-1]).timestamp()
    except (TypeError, ValueError):
        return CheckResult(f"{name}: clock", False, f"unreadable Date header {dates[-1]!r}", "")
    skew = time.time() - remote
    detail = f"local clock is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} the service"
    if abs(skew) > MAX_SKEW_SECONDS:
        return CheckResult(f"{name}: clock", False, detail + f" (more than {MAX_SKEW_SECONDS // 60} min: SAS and "
                           "Entra tokens are refused)", "synchronise the clock (chrony or systemd-timesyncd with NTP)")
    return CheckResult(f"{name}: clock", True, detail)


def _permissions(name: str, settings: AzureSettings, container: Any) -> list[CheckResult]:
    """Create, write, read, list, delete on a scratch blob; later steps skip if create failed."""
    key = f"{SCRATCH_PREFIX}/{os.getpid()}-{secrets.token_hex(6)}"
    blob = container.get_blob_client(key)
    first, second = b"godwit store check: create\n", b"godwit store check: write\n"
    out: list[CheckResult] = []

    def step(label: str, what: str, action: Callable[[], str | None], done: str, fix: str) -> bool:
        try:
            problem = action()
        except Exception as exc:
            message, hint = _problem(exc, settings, what)
            out.append(CheckResult(f"{name}: {label}", False, message, hint))
            return False
        out.append(CheckResult(f"{name}: {label}", problem is None, problem or done, fix if problem else ""))
        return problem is None

    def create() -> None:
        blob.upload_blob(first, overwrite=False)

    def write() -> None:
        blob.upload_blob(second, overwrite=True)

    def read() -> str | None:
        data = blob.download_blob().readall()
        return None if data in (first, second) else f"read back {len(data)} unexpected bytes"

    def listing() -> str | None:
        names = list(container.list_blob_names(name_starts_with=SCRATCH_PREFIX + "/"))
        return None if key in names else "the scratch blob is not listed"

    def delete() -> None:
        blob.delete_blob()

    if not step("create", "creating a scratch blob", create, f"created {key}", ""):
        return out
    step("write", "overwriting the scratch blob", write, "overwrote it", "")
    step("read", "reading the scratch blob", read, "read it back",
         "the account returned other bytes than were written: check for a proxy that rewrites content")
    step("list", "listing blobs", listing, "listed it",
         "the listing is stale or filtered: check the credential's list permission and any proxy")
    step("delete", "deleting the scratch blob", delete, "deleted it", "")
    return out
