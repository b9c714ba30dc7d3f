"""Who may do what through the AdminService, and the errors it answers with.

Two rules keep tenants apart:
- a role that may never call an RPC is refused (PERMISSION_DENIED) before any
  lookup, so the answer cannot depend on what exists;
- a record outside the caller's tenant is answered exactly as a missing one
  (NOT_FOUND, same message), so no tenant learns what another holds.

Store errors are translated here, once: NotFoundError → NOT_FOUND,
ConflictError → ALREADY_EXISTS (creating a duplicate) or FAILED_PRECONDITION (a
state change that is not allowed), ValueError from a list → INVALID_ARGUMENT on
page_token.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from unigate.gateway import callstate
from unigate.gateway.errors import FieldViolation, GatewayError, Reason, invalid_argument
from unigate.gateway.identity.principal import Principal
from unigate.gateway.store.base import ConflictError, NotFoundError, Store
from unigate.gateway.store.models import Consumer, Role

# ErrorInfo reasons of the AdminService beside those in errors.Reason.
RESOURCE_NOT_FOUND = Reason.RESOURCE_NOT_FOUND
RESOURCE_ALREADY_EXISTS = Reason.RESOURCE_ALREADY_EXISTS
RESOURCE_STATE_CONFLICT = Reason.RESOURCE_STATE_CONFLICT

_ADMIN_ROLES = frozenset({Role.ADMIN, Role.TENANT_ADMIN})


def caller() -> Principal:
    """The authenticated caller, or UNAUTHENTICATED."""
    principal = callstate.principal.get()
    if principal is None:
        raise GatewayError(
            grpc.StatusCode.UNAUTHENTICATED,
            Reason.UNAUTHENTICATED,
            "the admin API needs credentials: send `authorization: Bearer <admin key>`",
        )
    return principal


def is_any_admin(principal: Principal) -> bool:
    return bool(principal.roles & _ADMIN_ROLES)


def _denied(what: str, role: Role) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.PERMISSION_DENIED,
        Reason.ADMIN_ROLE_REQUIRED,
        f"{what}; your credentials do not carry that role",
        metadata={"required_role": role.value},
    )


def require_admin() -> Principal:
    """A global or tenant admin; anyone else is refused."""
    principal = caller()
    if not is_any_admin(principal):
        raise _denied(
            "this call needs an admin (a tenant admin or a global admin)", Role.TENANT_ADMIN
        )
    return principal


def require_global_admin() -> Principal:
    principal = caller()
    if not principal.is_admin():
        raise _denied("this call needs a global admin", Role.ADMIN)
    return principal


def not_found(resource: str, ident: str) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.NOT_FOUND,
        RESOURCE_NOT_FOUND,
        f"{resource} {ident!r} not found",
        metadata={"resource": resource, "id": ident},
    )


def administers(principal: Principal, tenant_id: str | None) -> bool:
    """Whether `principal` administers `tenant_id` (None: global records, global admins)."""
    if tenant_id is None:
        return principal.is_admin()
    return principal.can_administer(tenant_id)


def check_administers(
    principal: Principal, tenant_id: str | None, resource: str, ident: str
) -> None:
    if not administers(principal, tenant_id):
        raise not_found(resource, ident)


async def administered_consumer(store: Store, principal: Principal, consumer_id: str) -> Consumer:
    """The consumer, if `principal` administers its tenant; NOT_FOUND otherwise."""
    required(consumer_id=consumer_id)
    with store_errors("consumer", consumer_id):
        consumer = await store.get_consumer(consumer_id)
    check_administers(principal, consumer.tenant_id, "consumer", consumer_id)
    return consumer


def list_scope(principal: Principal, requested: str, *, required: bool) -> str | None:
    """The tenant a list call covers: tenant-scoped callers get their own tenant
    (naming another is NOT_FOUND); a global admin gets what it asked for, which
    must be set when `required`."""
    if principal.is_admin():
        if required and not requested:
            raise invalid_argument([FieldViolation("tenant_id", "required: name the tenant")])
        return requested or None
    own = principal.tenant_id
    if own is None or (requested and requested != own):
        raise not_found("tenant", requested or "")
    return own


def state_conflict(resource: str, ident: str, message: str) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.FAILED_PRECONDITION,
        RESOURCE_STATE_CONFLICT,
        message,
        metadata={"resource": resource, "id": ident},
    )


def required(**fields: str) -> None:
    """INVALID_ARGUMENT naming every empty field among `fields`."""
    missing = [FieldViolation(name, "required") for name, value in fields.items() if not value]
    if missing:
        raise invalid_argument(missing)


@contextmanager
def store_errors(
    resource: str,
    ident: str,
    *,
    conflict: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION,
    invalid_field: str = "page_token",
) -> Iterator[None]:
    """Translate the store's errors for a call about `resource` `ident`; the
    store's ValueError (a bad page token, a value its schema refuses) names
    `invalid_field`."""
    try:
        yield
    except NotFoundError:
        raise not_found(resource, ident) from None
    except ConflictError as exc:
        if conflict != grpc.StatusCode.ALREADY_EXISTS:
            raise state_conflict(resource, ident, str(exc)) from None
        raise GatewayError(
            conflict,
            RESOURCE_ALREADY_EXISTS,
            str(exc),
            metadata={"resource": resource, "id": ident},
        ) from None
    except ValueError as exc:
        raise invalid_argument([FieldViolation(invalid_field, str(exc))]) from None
