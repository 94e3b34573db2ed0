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
        # The road to Slack (docs/delivery.md).
        self.notices_queued = Counter(
            "gonogo_notices_queued_total", "Notices taken from an outbox for the first time", ["kind"], registry=r
        )
        self.notices_delivered = Counter(
            "gonogo_notices_delivered_total", "Notices posted to Slack", ["kind"], registry=r
        )
        self.notices_failed = Counter(
            "gonogo_notices_failed_total",
            "Failed attempts to post a notice (retried unless permanent)",
            ["kind", "error"],
            registry=r,
        )
        self.notices_dead_lettered = Counter(
            "gonogo_notices_dead_lettered_total", "Notices given up on", ["kind", "reason"], registry=r
        )
        self.outbox_depth = Gauge("gonogo_outbox_depth", "Undelivered notices in all outboxes", registry=r)
        self.outbox_oldest_age = Gauge(
            "gonogo_outbox_oldest_age_seconds", "Age of the oldest undelivered notice", registry=r
        )
        self.card_refresh_lag = Histogram(
            "gonogo_card_refresh_lag_seconds",
            "From a state change written to the card on Slack showing it",
            buckets=(0.1, 0.25, 0.5, 1, 1.5, 2, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.cards_behind = Gauge("gonogo_cards_behind", "Cards whose Slack copy is behind the state", registry=r)
        self.slack_api_calls = Counter(
            "gonogo_slack_api_calls_total",
            "Slack Web API calls by method and outcome (ok, 429, 5xx, connection, or Slack's error code)",
            ["method", "status"],
            registry=r,
        )
        self.slack_auth_failed = Gauge(
            "gonogo_slack_auth_failed", "1 while Slack refuses our token (invalid_auth, token_revoked)", registry=r
        )
