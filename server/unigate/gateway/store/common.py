"""What both SQL stores share below the logic: ids, the clock, page tokens, the
connection seam (`Conn`) each driver adapts to, and rows → records.

Ids sort by creation time (a millisecond timestamp, then 80 random bits, in
lowercase Crockford base32, whose alphabet is in ASCII order), so a keyset page
by id is also a page in creation order.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from unigate.gateway.store.base import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from unigate.gateway.store.models import (
    Admin,
    ApiKey,
    Consumer,
    Service,
    Subscription,
    SubscriptionStatus,
    Tenant,
)

Clock = Callable[[], float]
"""UTC epoch seconds; `time.time` unless a test brings its own."""

_BASE32 = "0123456789abcdefghjkmnpqrstvwxyz"


def _base32(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, digit = divmod(value, 32)
        chars.append(_BASE32[digit])
    return "".join(reversed(chars))


def new_id(prefix: str, now: float | None = None) -> str:
    """`<prefix>_` + 10 time characters (ms) + 16 random ones (80 bits)."""
    millis = int((time.time() if now is None else now) * 1000)
    return f"{prefix}_{_base32(millis, 10)}{_base32(secrets.randbits(80), 16)}"


def page_size_of(requested: int) -> int:
    if requested < 0:
        raise ValueError(f"page_size must not be negative (got {requested})")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_page_token(last_key: str) -> str:
    return base64.urlsafe_b64encode(last_key.encode()).decode().rstrip("=")


def decode_page_token(token: str, prefix: str = "") -> str:
    """The last key of the previous page, or "" for the first page.

    `prefix` (e.g. "ten_") rejects a token that another list handed out."""
    if not token:
        return ""
    try:
        key = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError(
            "invalid page_token: pass back the next_page_token of the previous page unchanged"
        ) from None
    if not key or not key.startswith(prefix):
        raise ValueError("invalid page_token: it does not belong to this list")
    return key


class Row(Protocol):
    """A result row by column name or position (sqlite3.Row and asyncpg.Record both
    are); by position is faster when a row has many columns."""

    def __getitem__(self, key: str | int, /) -> Any: ...


class Conn(Protocol):
    """One connection, inside a transaction or not. SQL uses `?` placeholders.

    Adapters translate driver errors: a unique violation → ConflictError, a foreign
    key violation → NotFoundError, a check violation → ValueError."""

    async def fetch(self, sql: str, *args: object) -> list[Row]: ...
    async def fetchrow(self, sql: str, *args: object) -> Row | None: ...
    async def execute(self, sql: str, *args: object) -> None: ...
    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        """`sql` once per row of arguments, in one round trip where the driver can."""

    async def serialize_writes(self, table: str) -> None:
        """Until this transaction ends, other transactions asking for `table` wait, so
        the ids they take become visible in the order they were taken. SQLite's
        write transactions already run one at a time."""


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def tenant_of(row: Row) -> Tenant:
    return Tenant(row["id"], row["name"], float(row["created_at"]), bool(row["disabled"]))


def consumer_of(row: Row) -> Consumer:
    return Consumer(
        row["id"], row["tenant_id"], row["name"], float(row["created_at"]), bool(row["disabled"])
    )


def admin_of(row: Row) -> Admin:
    return Admin(row["id"], row["tenant_id"], row["name"], float(row["created_at"]))


def key_of(row: Row) -> ApiKey:
    return ApiKey(
        id=row["id"],
        tenant_id=row["tenant_id"],
        consumer_id=row["consumer_id"],
        admin_id=row["admin_id"],
        name=row["name"],
        secret_hash=row["secret_hash"],
        created_at=float(row["created_at"]),
        expires_at=_opt_float(row["expires_at"]),
        revoked_at=_opt_float(row["revoked_at"]),
    )


def service_of(row: Row) -> Service:
    return Service(
        row["tenant_id"], row["alias"], bool(row["requires_approval"]), float(row["created_at"])
    )


def subscription_of(row: Row) -> Subscription:
    return Subscription(
        id=row["id"],
        tenant_id=row["tenant_id"],
        consumer_id=row["consumer_id"],
        alias=row["alias"],
        status=SubscriptionStatus(row["status"]),
        requested_at=float(row["requested_at"]),
        decided_by=row["decided_by"],
        decided_at=_opt_float(row["decided_at"]),
        note=row["note"],
    )
