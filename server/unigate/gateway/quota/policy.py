"""Quota policies from the config, and the limits that apply to one call.

    quotas:
      backend: redis                  # or memory (one process)
      redis_url: redis://127.0.0.1:6379/0
      on_redis_failure: fail_open     # or fail_closed
      prices:                         # per million tokens, by model alias
        gpt-4o-mini: {input: 0.15, output: 0.60, cached_input: 0.075}
      policies:
        - scope: tenant               # key, consumer, tenant, alias, deployment or global
          match: "*"                  # a specific id or alias, or * for each one
          requests_per_minute: 600
          tokens_per_day: 2000000
          concurrent: 20
          spend_per_month: 500

A `*` policy applies to each subject separately (every tenant gets its own 600/min);
a policy naming a subject applies to that one only. A call is checked against every
policy whose scope and match fit it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from unigate.gateway.config_types import Duration
from unigate.gateway.identity.principal import Principal
from unigate.gateway.quota.base import Kind, Limit

Scope = Literal["key", "consumer", "tenant", "alias", "deployment", "global"]

# (field name, kind, window in seconds)
LIMIT_FIELDS: tuple[tuple[str, Kind, float], ...] = (
    ("requests_per_second", Kind.REQUESTS, 1.0),
    ("requests_per_minute", Kind.REQUESTS, 60.0),
    ("tokens_per_minute", Kind.TOKENS, 60.0),
    ("tokens_per_day", Kind.TOKENS, 86_400.0),
    ("spend_per_day", Kind.SPEND, 86_400.0),
    ("spend_per_month", Kind.SPEND, 30 * 86_400.0),
    ("concurrent", Kind.CONCURRENCY, 0.0),
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(_Strict):
    """Currency units per million tokens."""

    input: float = Field(0.0, ge=0)
    output: float = Field(0.0, ge=0)
    cached_input: float | None = Field(None, ge=0)


class Policy(_Strict):
    scope: Scope
    match: str = "*"
    requests_per_second: float | None = Field(None, gt=0)
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    tokens_per_day: float | None = Field(None, gt=0)
    spend_per_day: float | None = Field(None, gt=0)
    spend_per_month: float | None = Field(None, gt=0)
    concurrent: int | None = Field(None, gt=0)


class QuotaSettings(_Strict):
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "unigate"
    on_redis_failure: Literal["fail_open", "fail_closed"] = "fail_open"
    timeout: Duration = 0.05
    prices: dict[str, Price] = Field(default_factory=dict)
    policies: list[Policy] = Field(default_factory=list)
    policy_cache_ttl: Duration = 5.0
    """How long each process caches a tenant's and consumer's stored policies."""


def subjects_of(principal: Principal | None, alias: str, deployment: str) -> dict[str, str]:
    """Scope → the id this call has in it (scopes it has no id in are left out)."""
    found = {"alias": alias, "global": "*"}
    if deployment:
        found["deployment"] = deployment
    if principal is not None:
        if principal.tenant_id:
            found["tenant"] = principal.tenant_id
        if principal.consumer_id:
            found["consumer"] = principal.consumer_id
        found["key"] = principal.subject
    return found


def limits_for(policies: Sequence[Policy], subjects: Mapping[str, str]) -> list[Limit]:
    limits: list[Limit] = []
    for policy in policies:
        subject = subjects.get(policy.scope)
        if subject is None or policy.match not in ("*", subject):
            continue
        for name, kind, window in LIMIT_FIELDS:
            value = getattr(policy, name)
            if value is not None:
                limits.append(Limit(name, kind, float(value), window, f"{policy.scope}:{subject}"))
    return limits


def cost_of(
    prices: Mapping[str, Price], alias: str, input_tokens: int, output_tokens: int, cached: int
) -> float:
    price = prices.get(alias)
    if price is None:
        return 0.0
    cached_price = price.input if price.cached_input is None else price.cached_input
    fresh = max(input_tokens - cached, 0)
    return (fresh * price.input + cached * cached_price + output_tokens * price.output) / 1e6
