"""`godwit network bench`: throughput and per-request latency to the cache store, on the path
replication uses — like ``azcopy bench``.

The store is opened exactly as a cycle opens it (``stores.open.open_store`` with the project's
Router, so the same transport builder and the same routing decision), without the bandwidth
throttle, since the point is to measure the path. Scratch objects go under ``godwit-bench/`` and
are removed afterwards, also when the run fails. Sizes and counts are bounded.
"""

from __future__ import annotations

import functools
import os
import secrets
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from godwit.errors import GodwitError, UsageError

if TYPE_CHECKING:
    from godwit.project.project import Project
    from godwit.stores.base import ObjectStore

PREFIX = "godwit-bench"
MAX_SIZE_MIB = 256.0
MAX_COUNT = 100
MAX_CONCURRENCY = 16
MAX_TOTAL_MIB = 4096.0


@dataclass
class Phase:
    """One kind of request: how many bytes, how long in all, and each request's latency."""

    requests: int = 0
    bytes: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)

        def pct(q: float) -> float | None:
            return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else None

        return {"requests": self.requests, "bytes": self.bytes, "seconds": round(self.seconds, 6),
                "mb_per_s": round(self.bytes / self.seconds / 1e6, 3) if self.seconds and self.bytes else None,
                "latency_ms": {"p50": statistics.median(lat) if lat else None, "p95": pct(0.95),
                               "max": lat[-1] if lat else None}}


@dataclass
class BenchResult:
    path: str
    store: str
    size_bytes: int
    count: int
    concurrency: int
    upload: Phase
    download: Phase
    small: Phase
    removed: int

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("upload", "download", "small"):
            d[k] = getattr(self, k).summary()
        return d


def check_bounds(size_mib: float, count: int, concurrency: int) -> None:
    if not 0 < size_mib <= MAX_SIZE_MIB:
        raise UsageError(f"--size-mib must be more than 0 and at most {MAX_SIZE_MIB:g}, not {size_mib:g}")
    if not 1 <= count <= MAX_COUNT:
        raise UsageError(f"--count must be from 1 to {MAX_COUNT}, not {count}")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise UsageError(f"--concurrency must be from 1 to {MAX_CONCURRENCY}, not {concurrency}")
    if size_mib * count > MAX_TOTAL_MIB:
        raise UsageError(f"--size-mib × --count is {size_mib * count:g} MiB; at most {MAX_TOTAL_MIB:g} MiB per run",
                         hint="fewer or smaller objects measure the path as well")


def describe_path(project: Project) -> str:
    """The data-plane path as the transport decides it (after a request, the router's last route)."""
    cfg = project.config
    if cfg.cache.kind != "azure":
        return f"local folder {project.cache_dir} (no network)"
    router = project.router
    if router is not None:
        route = router.last_data_route
        return route.describe() if route is not None else f"{router.network.data_plane} (no request made)"
    from godwit.azure.settings import parse_options
    from godwit.azure.transport import proxy_route

    settings = parse_options(cfg.cache.options, "cache", project.root)
    proxies = proxy_route(settings).for_url(settings.account_url)
    how = f"via proxy {next(iter(proxies.values()))}" if proxies else "direct"
    return f"data plane request to {settings.account_url} (internet, {how}; no [network] table)"


def _timed(phase: Phase, fn: Callable[[], int]) -> None:
    t0 = time.perf_counter()
    n = fn()
    phase.latencies_ms.append((time.perf_counter() - t0) * 1000)
    phase.requests += 1
    phase.bytes += n


def _run_phase(phase: Phase, pool: ThreadPoolExecutor, jobs: list[Callable[[], int]]) -> None:
    t0 = time.perf_counter()
    for f in [pool.submit(_timed, phase, job) for job in jobs]:
        f.result()
    phase.seconds = time.perf_counter() - t0


def bench(project: Project, *, size_mib: float = 8.0, count: int = 8, concurrency: int = 2) -> BenchResult:
    """Put ``count`` objects of ``size_mib``, read them back, time small requests, remove them."""
    from godwit.stores.open import open_store

    check_bounds(size_mib, count, concurrency)
    size = max(1, int(size_mib * (1 << 20)))
    store: ObjectStore = open_store(project.config.cache, project.root, project.router)
    payload = os.urandom(size)  # incompressible, as packs are
    base = f"{PREFIX}/{os.getpid()}-{secrets.token_hex(6)}"
    keys = [f"{base}/{i:04d}" for i in range(count)]
    up, down, small = Phase(), Phase(), Phase()
    removed = 0
    failure: BaseException | None = None
    try:
        with ThreadPoolExecutor(concurrency, thread_name_prefix="godwit-bench") as pool:
            def put(key: str) -> int:
                store.put(key, payload)
                return size

            def get(key: str) -> int:
                return len(store.get(key))

            def stat(key: str) -> int:
                store.size(key)
                return 0  # a small request: latency, no payload

            for phase, fn in ((up, put), (down, get), (small, stat)):
                _run_phase(phase, pool, [functools.partial(fn, k) for k in keys])
        path = describe_path(project)
    except BaseException as exc:
        failure = exc
        raise
    finally:
        try:
            for key in list(store.list(base + "/")):
                store.delete(key)
                removed += 1
        except GodwitError:
            if failure is None:  # the run's own error is the one to report
                raise
        finally:
            store.close()
    return BenchResult(path, store.description, size, count, concurrency, up, down, small, removed)
