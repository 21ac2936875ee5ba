"""/metrics: Prometheus figures of the API (requests, latency, errors) and of the state (cycles,
bytes sent, RPO per disk, mover lag, error events), read from the state at each scrape.

Each app has its own registry, so two services in one process (tests) never share counters.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from godwit.project.project import Project
from godwit.state.appliances import Appliances
from godwit.state.reports import Reports


class StateCollector(Collector):
    def __init__(self, project: Project) -> None:
        self.project = project

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        from godwit.engine import lifecycle

        now = time.time()
        path = f"cache:{self.project.config.cache.kind}"  # the data plane's route (the network plane names it)
        with self.project.db.unit() as u:
            r = Reports(u.connection)
            sent, cycles, errors, waiting = r.bytes_sent(), r.cycles_by_state(), r.error_events(), r.oldest_unapplied()
            appliances = Appliances(u.connection).all()
        status = lifecycle.status(self.project)
        b = CounterMetricFamily("godwit_bytes_sent", "Bytes committed cycles sent to the cache store",
                                labels=["server", "path"])
        for server, n in sorted(sent.items()):
            b.add_metric([server, path], n)
        yield b
        c = GaugeMetricFamily("godwit_cycles", "Cycles in the state, by state", labels=["server", "state"])
        for (server, state), n in sorted(cycles.items()):
            c.add_metric([server, state], n)
        yield c
        rpo = GaugeMetricFamily("godwit_rpo_seconds", "Age of the newest committed cycle, per disk",
                                labels=["server", "disk"])
        for s in status:
            for d in s.disks:
                if s.rpo_seconds is not None:
                    rpo.add_metric([s.server, str(d.index)], s.rpo_seconds)
        yield rpo
        lag = GaugeMetricFamily("godwit_mover_lag_seconds", "How long the oldest committed cycle has waited "
                                "for the mover (0: none waits)", labels=["server"])
        for s in status:
            lag.add_metric([s.server], max(0.0, now - waiting[s.server]) if s.server in waiting else 0.0)
        yield lag
        behind = GaugeMetricFamily("godwit_mover_waiting_cycles", "Committed cycles the mover has not applied yet",
                                   labels=["server"])
        for s in status:
            behind.add_metric([s.server], cycles.get((s.server, "committed"), 0))
        yield behind
        hb = GaugeMetricFamily("godwit_appliance_heartbeat_age_seconds", "Seconds since each appliance's last "
                               "heartbeat", labels=["appliance"])
        for a in appliances:
            if a.last_seen is not None:
                hb.add_metric([a.name], max(0.0, now - a.last_seen))
        yield hb
        e = CounterMetricFamily("godwit_error_events", "Error events logged", labels=["server"])
        for who, count in sorted(errors.items(), key=lambda kv: kv[0] or ""):
            e.add_metric([who or ""], count)
        yield e


class Metrics:
    def __init__(self, project: Project) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("godwit_http_requests", "API requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("godwit_http_request_seconds", "API request latency", ["route"],
                                 registry=self.registry)
        self.errors = Counter("godwit_api_errors", "API answers with an error status", ["status"],
                              registry=self.registry)
        self.registry.register(StateCollector(project))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if status >= 400:
            self.errors.labels(str(status)).inc()
