"""Prometheus metrics, scraped over real HTTP from the gateway's own registry."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from unigate.gateway.observability.metrics import ATTEMPT_OUTCOMES, DeploymentState, Metrics
from unigate.gateway.store.models import CallLog

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

# Labels that would grow without bound, or name a person or a secret's id.
FORBIDDEN_LABELS = {"request_id", "end_user", "user", "consumer", "consumer_id", "key_id"}
FORBIDDEN_LABELS |= {"client_address", "peer"}

SERVED = CallLog(
    request_id="req-1",
    ts=0.0,
    method="StreamChat",
    code="OK",
    tenant_id="ten-a",
    consumer_id="con-1",
    key_id="key-1",
    alias="gpt",
    provider="openai-main",
    deployment="openai-main/gpt-4o",
    vendor_model="gpt-4o",
    latency_ms=900.0,
    upstream_latency_ms=800.0,
    ttft_ms=120.0,
    input_tokens=100,
    output_tokens=40,
    cached_tokens=10,
    cost=0.25,
    retries=2,
    fallbacks="gpt-old",
    client_address="10.0.0.7",
    end_user="alice@example.com",
)


@pytest.fixture
def metrics() -> Iterator[tuple[Metrics, int]]:
    served = Metrics()
    port = served.start("127.0.0.1", 0)
    yield served, port
    served.stop()


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def exact(samples: Samples, name: str, **labels: str) -> float:
    """A series that must be there (a zero from `value` could be a missing series)."""
    return samples[(name, frozenset(labels.items()))]


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_every_rpc_is_counted_by_outcome_and_timed(metrics: tuple[Metrics, int]) -> None:
    served, port = metrics
    before = scrape(port)
    served.call_finished("unigate.v1.InferenceService", "Chat", "OK", 0.2)
    served.call_finished("unigate.v1.InferenceService", "Chat", "OK", 3.0)
    served.call_finished("unigate.v1.InferenceService", "Chat", "NOT_FOUND", 0.001)
    served.call_finished("unigate.v1.AdminService", "ListTenants", "OK", 0.004)
    after = scrape(port)

    chat = {"service": "unigate.v1.InferenceService", "method": "Chat"}
    assert moved(before, after, "unigate_calls_total", **chat, code="OK") == 2
    assert moved(before, after, "unigate_calls_total", **chat, code="NOT_FOUND") == 1
    admin = {"service": "unigate.v1.AdminService", "method": "ListTenants"}
    assert moved(before, after, "unigate_calls_total", **admin, code="OK") == 1
    duration = "unigate_call_duration_seconds"
    assert moved(before, after, f"{duration}_count", **chat) == 3
    assert moved(before, after, f"{duration}_sum", **chat) == pytest.approx(3.201)
    assert value(after, f"{duration}_bucket", **chat, le="0.005") == 1
    assert value(after, f"{duration}_bucket", **chat, le="0.25") == 2
    assert value(after, f"{duration}_bucket", **chat, le="300.0") == 3


def test_an_inference_call_moves_its_counters_by_exactly_its_usage(
    metrics: tuple[Metrics, int],
) -> None:
    served, port = metrics
    before = scrape(port)
    served.inference_finished(SERVED)
    served.inference_finished(replace(SERVED, tenant_id=None, cache_hit=True, retries=0))
    after = scrape(port)

    for tenant in ("ten-a", ""):
        tokens = {"tenant": tenant, "alias": "gpt"}
        assert moved(before, after, "unigate_tokens_total", **tokens, kind="input") == 100
        assert moved(before, after, "unigate_tokens_total", **tokens, kind="output") == 40
        assert moved(before, after, "unigate_tokens_total", **tokens, kind="cached") == 10
        assert moved(before, after, "unigate_cost_total", **tokens) == pytest.approx(0.25)
    upstream = {"alias": "gpt", "provider": "openai-main"}
    assert moved(before, after, "unigate_upstream_duration_seconds_count", **upstream) == 2
    assert moved(
        before, after, "unigate_upstream_duration_seconds_sum", **upstream
    ) == pytest.approx(1.6)
    assert moved(before, after, "unigate_time_to_first_token_seconds_count", alias="gpt") == 2
    assert exact(after, "unigate_time_to_first_token_seconds_bucket", alias="gpt", le="0.1") == 0
    assert value(after, "unigate_time_to_first_token_seconds_bucket", alias="gpt", le="0.2") == 2
    assert moved(before, after, "unigate_cache_hits_total", alias="gpt") == 1
    assert moved(before, after, "unigate_upstream_retries_total", alias="gpt") == 2
    assert moved(before, after, "unigate_fallbacks_total", alias="gpt") == 2


def test_quota_refusals_count_by_reason_and_add_no_alias_series(
    metrics: tuple[Metrics, int],
) -> None:
    served, port = metrics
    refused = CallLog(
        request_id="r", ts=0, method="Chat", code="RESOURCE_EXHAUSTED", alias="made-up"
    )
    before = scrape(port)
    served.inference_finished(replace(refused, reason="RATE_LIMITED"))
    served.inference_finished(replace(refused, reason="RATE_LIMITED"))
    served.inference_finished(replace(refused, reason="BUDGET_EXCEEDED"))
    # Not a quota of ours: the upstream vendor's limit, and the quota backend failing.
    served.inference_finished(replace(refused, reason="UPSTREAM_QUOTA_EXHAUSTED"))
    served.inference_finished(replace(refused, code="UNAVAILABLE", reason="RATE_LIMITED"))
    served.inference_finished(
        replace(refused, code="NOT_FOUND", reason="MODEL_NOT_FOUND", alias="x" * 50)
    )
    after = scrape(port)

    rejections = "unigate_quota_rejections_total"
    assert moved(before, after, rejections, reason="RATE_LIMITED") == 2
    assert moved(before, after, rejections, reason="BUDGET_EXCEEDED") == 1
    assert {labels for name, labels in after if name == rejections} == {
        frozenset({("reason", "RATE_LIMITED")}),
        frozenset({("reason", "BUDGET_EXCEEDED")}),
    }
    aliases = {dict(labels).get("alias") for _, labels in after} - {None}
    assert aliases == set(), "a call refused before any work must not create alias series"


def test_tenants_and_aliases_beyond_their_caps_are_reported_as_other() -> None:
    capped = Metrics(tenant_limit=3, alias_limit=2)
    port = capped.start("127.0.0.1", 0)
    try:
        for n in range(5):
            capped.inference_finished(replace(SERVED, tenant_id=f"ten-{n}", input_tokens=n + 1))
        capped.inference_finished(replace(SERVED, tenant_id="ten-0", input_tokens=1000))
        capped.inference_finished(replace(SERVED, tenant_id="ten-0", alias="b", input_tokens=7))
        capped.inference_finished(replace(SERVED, tenant_id="ten-9", alias="c", input_tokens=8))
        samples = scrape(port)
    finally:
        capped.stop()

    tokens = {
        (dict(labels)["tenant"], dict(labels)["alias"]): v
        for (name, labels), v in samples.items()
        if name == "unigate_tokens_total" and dict(labels)["kind"] == "input"
    }
    assert tokens == {
        ("ten-0", "gpt"): 1 + 1000,  # seen before the cap: keeps its own series
        ("ten-1", "gpt"): 2,
        ("ten-2", "gpt"): 3,
        ("other", "gpt"): 4 + 5,
        ("ten-0", "b"): 7,
        ("other", "other"): 8,
    }


def test_no_label_names_a_request_person_key_or_address(metrics: tuple[Metrics, int]) -> None:
    served, port = metrics
    served.call_finished("unigate.v1.InferenceService", "Chat", "OK", 0.1)
    served.inference_finished(replace(SERVED, cache_hit=True))
    served.watch_queue("call_log", lambda: 1, lambda: 0)
    served.watch_deployments(lambda: [DeploymentState("d", "gpt", "openai-main")])
    served.deployment_picked("gpt", "d")
    served.attempt_finished("gpt", "d", "ok")
    samples = scrape(port)
    label_names = {name for _, labels in samples for name, _ in labels}
    assert not label_names & FORBIDDEN_LABELS
    values = {v for _, labels in samples for _, v in labels}
    assert not values & {"req-1", "con-1", "key-1", "10.0.0.7", "alice@example.com"}


def test_queue_gauges_read_the_callables_at_scrape_time(metrics: tuple[Metrics, int]) -> None:
    served, port = metrics
    state = {"depth": 3, "dropped": 0}
    served.watch_queue("call_log", lambda: state["depth"], lambda: state["dropped"])
    served.watch_queue("access_log", lambda: 0, lambda: 12)
    first = scrape(port)
    state.update(depth=0, dropped=5)
    second = scrape(port)

    assert value(first, "unigate_queue_depth", queue="call_log") == 3
    assert exact(first, "unigate_queue_dropped_total", queue="call_log") == 0
    assert exact(second, "unigate_queue_depth", queue="call_log") == 0
    assert value(second, "unigate_queue_dropped_total", queue="call_log") == 5
    assert value(second, "unigate_queue_dropped_total", queue="access_log") == 12


def test_a_failing_callback_leaves_the_rest_of_the_scrape_intact(
    metrics: tuple[Metrics, int],
) -> None:
    served, port = metrics

    def broken() -> int:
        raise RuntimeError("queue gone")

    served.watch_queue("broken", broken, lambda: 0)
    served.watch_queue("fine", lambda: 2, lambda: 0)
    served.call_finished("unigate.v1.InferenceService", "Chat", "OK", 0.1)
    samples = scrape(port)
    assert value(samples, "unigate_queue_depth", queue="fine") == 2
    assert ("unigate_queue_depth", frozenset({("queue", "broken")})) not in samples
    assert value(samples, "unigate_calls_total", **CHAT_OK) == 1


CHAT_OK = {"service": "unigate.v1.InferenceService", "method": "Chat", "code": "OK"}


def test_deployment_gauges_follow_the_router_snapshot(metrics: tuple[Metrics, int]) -> None:
    served, port = metrics
    states = [
        DeploymentState("east", "gpt", "openai-east", "healthy", 4, 0.8, 0.01),
        DeploymentState("west", "gpt", "openai-west", "ejected", 0, None, 0.9, 7.5),
        DeploymentState("west", "gpt", "openai-west", "healthy"),  # duplicate: first wins
    ]
    served.watch_deployments(lambda: states)
    first = scrape(port)
    states[:] = [DeploymentState("west", "gpt", "openai-west", "half_open", 1)]
    second = scrape(port)

    east = {"deployment": "east", "alias": "gpt", "provider": "openai-east"}
    west = {"deployment": "west", "alias": "gpt", "provider": "openai-west"}
    assert value(first, "unigate_deployment_up", **east) == 1
    assert exact(first, "unigate_deployment_up", **west) == 0
    assert value(first, "unigate_deployment_in_flight", **east) == 4
    assert value(first, "unigate_deployment_latency_ewma_seconds", **east) == 0.8
    assert value(first, "unigate_deployment_error_rate", **west) == 0.9
    assert ("unigate_deployment_latency_ewma_seconds", frozenset(west.items())) not in first
    assert value(first, "unigate_deployment_ejected_seconds", **west) == 7.5
    assert exact(first, "unigate_deployment_ejected_seconds", **east) == 0
    circuit = "unigate_deployment_circuit_state"
    west_states = {
        dict(labels)["state"]: v
        for (name, labels), v in first.items()
        if name == circuit and dict(labels)["deployment"] == "west"
    }
    assert west_states == {"healthy": 0, "ejected": 1, "half_open": 0}

    assert exact(second, "unigate_deployment_up", **west) == 0
    assert value(second, circuit, deployment="west", alias="gpt", state="half_open") == 1
    assert exact(second, circuit, deployment="west", alias="gpt", state="ejected") == 0
    assert not any(dict(labels).get("deployment") == "east" for _, labels in second)


def test_only_the_metrics_path_is_served(metrics: tuple[Metrics, int]) -> None:
    _, port = metrics
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
    assert caught.value.code == 404


def test_stop_frees_the_port() -> None:
    served = Metrics()
    port = served.start("127.0.0.1", 0)
    assert scrape(port) is not None
    served.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    served.stop()  # a second stop is harmless
    again = Metrics()  # the same port can be bound again (as a restarted gateway would)
    assert again.start("127.0.0.1", port) == port
    again.stop()


def test_two_gateways_in_one_process_keep_separate_registries() -> None:
    one, two = Metrics(), Metrics()
    one_port, two_port = one.start("127.0.0.1", 0), two.start("127.0.0.1", 0)
    try:
        one.call_finished("unigate.v1.InferenceService", "Chat", "OK", 0.1)
        assert value(scrape(one_port), "unigate_calls_total", **CHAT_OK) == 1
        assert value(scrape(two_port), "unigate_calls_total", **CHAT_OK) == 0
    finally:
        one.stop()
        two.stop()


def test_balancer_picks_and_attempt_outcomes_are_counted_per_deployment(
    metrics: tuple[Metrics, int],
) -> None:
    served, port = metrics
    before = scrape(port)
    for deployment in ("east", "west", "east", "east"):
        served.deployment_picked("gpt", deployment)
    served.attempt_finished("gpt", "west", "retryable")
    served.attempt_finished("gpt", "east", "ok")
    served.attempt_finished("gpt", "east", "ok")
    served.attempt_finished("gpt", "east", "made-up outcome")
    after = scrape(port)

    picks = "unigate_deployment_picks_total"
    assert moved(before, after, picks, alias="gpt", deployment="east") == 3
    assert moved(before, after, picks, alias="gpt", deployment="west") == 1
    attempts = "unigate_upstream_attempts_total"
    assert moved(before, after, attempts, alias="gpt", deployment="west", outcome="retryable") == 1
    assert moved(before, after, attempts, alias="gpt", deployment="east", outcome="ok") == 2
    assert moved(before, after, attempts, alias="gpt", deployment="east", outcome="other") == 1
    outcomes = {dict(labels)["outcome"] for name, labels in after if name == attempts}
    assert outcomes <= ATTEMPT_OUTCOMES | {"other"}


def test_deployment_labels_are_capped_like_aliases() -> None:
    capped = Metrics(alias_limit=1, deployment_limit=2)
    port = capped.start("127.0.0.1", 0)
    try:
        for n in range(4):
            capped.deployment_picked("gpt", f"d{n}")
        capped.deployment_picked("made-up", "d0")
        samples = scrape(port)
    finally:
        capped.stop()
    picks = {
        (dict(labels)["alias"], dict(labels)["deployment"]): v
        for (name, labels), v in samples.items()
        if name == "unigate_deployment_picks_total"
    }
    assert picks == {("gpt", "d0"): 1, ("gpt", "d1"): 1, ("gpt", "other"): 2, ("other", "d0"): 1}
