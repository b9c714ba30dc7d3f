"""Prometheus metrics on a port of their own: GET /metrics.

Each gateway owns a CollectorRegistry (never the process-global one), so several
gateways can run in one process. Two ways in:

- events, once per call: `call_finished` for every RPC, `inference_finished` with
  the call's CallLog; and per upstream attempt, `deployment_picked` (the balancer's
  choice) and `attempt_finished` (its outcome). Labelled children are cached by
  label tuple, so an update is a dict lookup and a locked add, a few microseconds;
- callbacks read at scrape time: `watch_queue` and `watch_deployments`. They are
  called on the scrape thread, not the event loop, so they must be cheap and only
  read (copy a dict before iterating it). One that raises is logged and skipped.

Bounded cardinality: labels are never request ids, end users, consumers, key ids
or client addresses. Tenants and aliases are capped: after `tenant_limit`
distinct tenants (and `alias_limit` aliases) new ones are reported as "other"
until restart. Alias-labelled series are only created by calls that did work
(tokens, cost, an upstream attempt, a cache hit), so an unknown alias a caller
made up never becomes a series. The unauthenticated tenant is "". Deployment
names come from the config (capped like aliases all the same), and an attempt's
outcome is one of ATTEMPT_OUTCOMES, anything else "other".
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Generic, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from unigate.gateway.quota.base import REFUSAL_REASONS
from unigate.gateway.store.models import CallLog

log = logging.getLogger(__name__)

OTHER = "other"
# Whole calls and upstream attempts: 5 ms (a cache hit) to 5 min (a long generation).
DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300,
)  # fmt: skip
TTFT_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 30, 60,
)  # fmt: skip
QUOTA_REASONS = frozenset(REFUSAL_REASONS.values())
CIRCUIT_STATES = ("healthy", "ejected", "half_open")
# How one upstream attempt ended: answered; failed and retryable (UNAVAILABLE, a
# deployment's 429, a refused or broken connection); out of time; cancelled by the
# caller; failed otherwise (not worth a retry).
ATTEMPT_OUTCOMES = frozenset({"ok", "retryable", "deadline", "cancelled", "error"})


@dataclass(frozen=True, slots=True)
class DeploymentState:
    """One deployment of one alias as the router sees it at scrape time."""

    deployment: str
    alias: str
    provider: str
    state: str = "healthy"  # one of CIRCUIT_STATES
    in_flight: int = 0
    ewma_latency_seconds: float | None = None
    error_rate: float | None = None  # 0..1 over the router's window
    ejected_for: float = 0.0  # seconds left of an ejection


M = TypeVar("M", Counter, Histogram)


class _Children(Generic[M]):
    """A metric's labelled children, cached: `.labels()` validates and locks."""

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: M) -> None:
        self._metric: M = metric
        self._children: dict[tuple[str, ...], M] = {}

    def get(self, *labels: str) -> M:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self._metric.labels(*labels)
        return child


class _Capped:
    """Label values as they come until `limit` distinct ones, then OTHER."""

    __slots__ = ("_limit", "_seen")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return OTHER
        self._seen.add(value)
        return value


class Metrics:
    def __init__(
        self, *, tenant_limit: int = 1000, alias_limit: int = 1000, deployment_limit: int = 1000
    ) -> None:
        self.registry = CollectorRegistry()
        self._tenant = _Capped(tenant_limit)
        self._alias = _Capped(alias_limit)
        self._deployment = _Capped(deployment_limit)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._watched = _Watched()
        self.registry.register(self._watched)

        def counter(name: str, doc: str, *labels: str) -> _Children[Counter]:
            return _Children(Counter(name, doc, labels, registry=self.registry))

        def histogram(
            name: str, doc: str, buckets: tuple[float, ...], *labels: str
        ) -> _Children[Histogram]:
            metric = Histogram(name, doc, labels, registry=self.registry, buckets=buckets)
            return _Children(metric)

        self._calls = counter(
            "unigate_calls", "RPCs served, by outcome.", "service", "method", "code"
        )
        self._call_seconds = histogram(
            "unigate_call_duration_seconds",
            "RPC duration in the gateway, arrival to the last message.",
            DURATION_BUCKETS,
            "service",
            "method",
        )
        self._upstream_seconds = histogram(
            "unigate_upstream_duration_seconds",
            "The last upstream attempt of an inference call, to its last byte.",
            DURATION_BUCKETS,
            "alias",
            "provider",
        )
        self._ttft_seconds = histogram(
            "unigate_time_to_first_token_seconds",
            "Streams: arrival to the first content sent.",
            TTFT_BUCKETS,
            "alias",
        )
        self._tokens = counter(
            "unigate_tokens", "Tokens billed, by kind.", "tenant", "alias", "kind"
        )
        self._cost = counter(
            "unigate_cost", "Cost from the price table, in its currency.", "tenant", "alias"
        )
        self._cache_hits = counter(
            "unigate_cache_hits", "Calls answered from the response cache.", "alias"
        )
        self._quota_rejections = counter(
            "unigate_quota_rejections", "Calls refused by a quota.", "reason"
        )
        self._retries = counter(
            "unigate_upstream_retries", "Upstream attempts after the first.", "alias"
        )
        self._fallbacks = counter(
            "unigate_fallbacks", "Calls answered by a fallback alias.", "alias"
        )
        self._picks = counter(
            "unigate_deployment_picks",
            "Deployments the balancer chose, one per upstream attempt.",
            "alias",
            "deployment",
        )
        self._attempts = counter(
            "unigate_upstream_attempts",
            "Upstream attempts, by how they ended (ok, retryable, deadline, cancelled, error).",
            "alias",
            "deployment",
            "outcome",
        )

    # --- events, on the hot path -------------------------------------------------

    def call_finished(self, service: str, method: str, code: str, seconds: float) -> None:
        """Every RPC, inference and admin alike, once it ended."""
        self._calls.get(service, method, code).inc()
        self._call_seconds.get(service, method).observe(seconds)

    def inference_finished(self, record: CallLog) -> None:
        """One inference call's outcome, from its call log record."""
        if record.code == "RESOURCE_EXHAUSTED" and record.reason in QUOTA_REASONS:
            self._quota_rejections.get(record.reason).inc()
        if not (
            record.upstream_latency_ms is not None
            or record.ttft_ms is not None
            or record.input_tokens
            or record.output_tokens
            or record.cached_tokens
            or record.cost
            or record.cache_hit
            or record.retries
            or record.fallbacks
        ):
            return  # refused before any work: nothing alias-labelled to count
        alias = self._alias(record.alias)
        if record.upstream_latency_ms is not None:
            self._upstream_seconds.get(alias, record.provider).observe(
                record.upstream_latency_ms / 1000
            )
        if record.ttft_ms is not None:
            self._ttft_seconds.get(alias).observe(record.ttft_ms / 1000)
        tenant = self._tenant(record.tenant_id or "")
        if record.input_tokens:
            self._tokens.get(tenant, alias, "input").inc(record.input_tokens)
        if record.output_tokens:
            self._tokens.get(tenant, alias, "output").inc(record.output_tokens)
        if record.cached_tokens:
            self._tokens.get(tenant, alias, "cached").inc(record.cached_tokens)
        if record.cost:
            self._cost.get(tenant, alias).inc(record.cost)
        if record.cache_hit:
            self._cache_hits.get(alias).inc()
        if record.retries:
            self._retries.get(alias).inc(record.retries)
        if record.fallbacks:
            self._fallbacks.get(alias).inc()

    def deployment_picked(self, alias: str, deployment: str) -> None:
        """The balancer chose `deployment` of `alias` for an upstream attempt."""
        self._picks.get(self._alias(alias), self._deployment(deployment)).inc()

    def attempt_finished(self, alias: str, deployment: str, outcome: str) -> None:
        """An upstream attempt ended; `outcome` is one of ATTEMPT_OUTCOMES."""
        outcome = outcome if outcome in ATTEMPT_OUTCOMES else OTHER
        self._attempts.get(self._alias(alias), self._deployment(deployment), outcome).inc()

    # --- callbacks, read at scrape time ------------------------------------------

    def watch_queue(self, name: str, depth: Callable[[], int], dropped: Callable[[], int]) -> None:
        """Report a queue's depth and how many items it dropped; a name replaces."""
        self._watched.queues[name] = (depth, dropped)

    def watch_deployments(self, snapshot: Callable[[], Iterable[DeploymentState]]) -> None:
        """Report each deployment's health from the router's own snapshot."""
        self._watched.deployments = snapshot

    # --- the HTTP endpoint -------------------------------------------------------

    def start(self, host: str, port: int) -> int:
        """Serve GET /metrics from a daemon thread; returns the bound port."""
        if self._server is not None:
            raise RuntimeError("metrics are already served")
        app = _only_metrics_path(make_wsgi_app(self.registry))
        server_class = _server_class(host, port)
        server = make_server(host, port, app, server_class, handler_class=_SilentHandler)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="metrics-http"
        )
        self._thread.daemon = True
        self._thread.start()
        return int(server.server_address[1])

    def stop(self) -> None:
        """Stop serving and free the port; safe to call when not started."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


class _Watched(Collector):
    """Gauges whose values come from callables, read when Prometheus scrapes."""

    def __init__(self) -> None:
        self.queues: dict[str, tuple[Callable[[], int], Callable[[], int]]] = {}
        self.deployments: Callable[[], Iterable[DeploymentState]] | None = None

    def collect(self) -> Iterator[Metric]:
        yield from self._queues()
        if self.deployments is not None:
            yield from self._deployments(self.deployments)

    def _queues(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "unigate_queue_depth", "Items waiting in a background queue.", labels=["queue"]
        )
        dropped = CounterMetricFamily(
            "unigate_queue_dropped", "Items a full queue dropped.", labels=["queue"]
        )
        for name, (read_depth, read_dropped) in list(self.queues.items()):
            try:
                values = read_depth(), read_dropped()
            except Exception:
                log.exception("reading queue %r for metrics failed", name)
                continue
            depth.add_metric([name], values[0])
            dropped.add_metric([name], values[1])
        yield depth
        yield dropped

    def _deployments(self, snapshot: Callable[[], Iterable[DeploymentState]]) -> Iterator[Metric]:
        labels = ["deployment", "alias", "provider"]
        up = GaugeMetricFamily(
            "unigate_deployment_up", "1 when a deployment is healthy, else 0.", labels=labels
        )
        circuit = GaugeMetricFamily(
            "unigate_deployment_circuit_state",
            "1 for a deployment's current circuit state, 0 for the others.",
            labels=["deployment", "alias", "state"],
        )
        in_flight = GaugeMetricFamily(
            "unigate_deployment_in_flight", "Upstream calls in flight.", labels=labels
        )
        latency = GaugeMetricFamily(
            "unigate_deployment_latency_ewma_seconds",
            "Exponentially weighted mean upstream latency.",
            labels=labels,
        )
        error_rate = GaugeMetricFamily(
            "unigate_deployment_error_rate", "Share of recent attempts that failed.", labels=labels
        )
        ejected = GaugeMetricFamily(
            "unigate_deployment_ejected_seconds",
            "Seconds left of a deployment's ejection by its circuit breaker; 0 when not ejected.",
            labels=labels,
        )
        try:
            states = list(snapshot())
        except Exception:
            log.exception("reading deployment states for metrics failed")
            states = []
        seen: set[tuple[str, str]] = set()
        for s in states:
            if (s.deployment, s.alias) in seen:
                continue  # a duplicate series would fail the whole scrape
            seen.add((s.deployment, s.alias))
            values = [s.deployment, s.alias, s.provider]
            up.add_metric(values, 1.0 if s.state == "healthy" else 0.0)
            known = CIRCUIT_STATES if s.state in CIRCUIT_STATES else (*CIRCUIT_STATES, s.state)
            for state in known:
                circuit.add_metric([s.deployment, s.alias, state], float(state == s.state))
            in_flight.add_metric(values, s.in_flight)
            if s.ewma_latency_seconds is not None:
                latency.add_metric(values, s.ewma_latency_seconds)
            if s.error_rate is not None:
                error_rate.add_metric(values, s.error_rate)
            ejected.add_metric(values, s.ejected_for)
        yield from (up, circuit, in_flight, latency, error_rate, ejected)


class _SilentHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def _server_class(host: str, port: int) -> type[WSGIServer]:
    family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)[0][0]

    class _ThreadingServer(ThreadingMixIn, WSGIServer):
        address_family = family
        daemon_threads = True

    return _ThreadingServer


WsgiApp = Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]


def _only_metrics_path(app: WsgiApp) -> WsgiApp:
    def serve(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"metrics are at /metrics\n"]
        return app(environ, start_response)

    return serve
