"""Prometheus metrics, on a registry of our own (so tests can build several bots in one process)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.slack_requests = Counter(
            "gonogo_slack_requests_total", "Requests received from Slack", ["kind", "status"], registry=r
        )
        self.slack_request_seconds = Histogram(
            "gonogo_slack_request_seconds",
            "Time to answer Slack (the ack)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 3),
            registry=r,
        )
        self.check_results = Counter(
            "gonogo_check_results_total", "Check results by kind and status", ["kind", "status"], registry=r
        )
        self.runs = Counter("gonogo_runs_total", "Check runs by final verdict", ["verdict"], registry=r)
        self.run_seconds = Histogram(
            "gonogo_run_seconds",
            "Wall time of a check run",
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800),
            registry=r,
        )
        self.store_errors = Counter("gonogo_store_unavailable_total", "Redis unreachable", registry=r)
        self.gates_loaded = Gauge("gonogo_gates_loaded", "Gates currently loaded", registry=r)
        self.in_flight = Gauge("gonogo_in_flight_runs", "Runs in progress in this process", registry=r)
