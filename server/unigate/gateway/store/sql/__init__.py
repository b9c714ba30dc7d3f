"""The store written once in SQL; sqlite.py and postgres.py give it connections."""

from __future__ import annotations

from unigate.gateway.store.base import Store
from unigate.gateway.store.sql.call_logs import CallLogsSql
from unigate.gateway.store.sql.keys import KeysSql
from unigate.gateway.store.sql.quota_policies import QuotaPoliciesSql
from unigate.gateway.store.sql.subscriptions import SubscriptionsSql
from unigate.gateway.store.sql.tenants import TenantsSql


class SqlStore(TenantsSql, KeysSql, SubscriptionsSql, QuotaPoliciesSql, CallLogsSql):
    """Every `Store` method; a subclass supplies `_read`, `_write`, `open` and `close`."""


def _implements_store(store: SqlStore) -> Store:
    return store  # mypy proves here that SqlStore has every Store method, as typed there


__all__ = ["SqlStore"]
