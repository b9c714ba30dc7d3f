"""Authentication: who is calling, from an API key, a JWT or a client certificate.

`authorization: Bearer <key or JWT>` or `x-api-key: <key>`; without either, a
client certificate that an mTLS rule maps to a consumer. The Principal goes into
`callstate.principal` for the access check and the admin service. Failures are
AuthErrors (UNAUTHENTICATED with a reason), turned into statuses by the error
interceptor outside this one. Health and reflection are never wrapped.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from contextlib import aclosing
from typing import Any

from unigate.gateway import callstate
from unigate.gateway.identity.errors import AuthError, AuthReason
from unigate.gateway.identity.jwt import JwtAuthenticator
from unigate.gateway.identity.keys import KeyAuthenticator, KeyRecord, looks_like_key
from unigate.gateway.identity.mtls import MtlsIdentifier
from unigate.gateway.identity.principal import Principal, Via
from unigate.gateway.interceptors.base import (
    Context,
    HandlerInterceptor,
    StreamBehavior,
    UnaryBehavior,
)
from unigate.gateway.store.base import NotFoundError, Store

_HOW = "send `authorization: Bearer <api key or JWT>` or `x-api-key: <api key>`"


def _credential(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthError(
                    AuthReason.MALFORMED_CREDENTIALS, f"unsupported authorization value; {_HOW}"
                )
            return token.strip()
        if key == "x-api-key" and isinstance(value, str):
            return value.strip()
    return None


class Authenticator:
    def __init__(
        self,
        keys: KeyAuthenticator,
        jwts: JwtAuthenticator | None = None,
        mtls: MtlsIdentifier | None = None,
        *,
        check_identity: Callable[[Principal], Awaitable[None]] | None = None,
    ) -> None:
        self._keys = keys
        self._jwts = jwts
        self._mtls = mtls
        self._check_identity = check_identity

    async def authenticate(self, context: Context) -> Principal:
        principal = await self._identify(context)
        if principal.via != Via.API_KEY and self._check_identity is not None:
            await self._check_identity(principal)
        return principal

    async def _identify(self, context: Context) -> Principal:
        credential = _credential(context.invocation_metadata())
        if credential is not None:
            if looks_like_key(credential):
                return await self._keys.authenticate(credential)
            if self._jwts is not None and credential.count(".") == 2:
                return await self._jwts.authenticate(credential)
            raise AuthError(
                AuthReason.MALFORMED_CREDENTIALS,
                "the credential is neither a unigate API key (ug_...)"
                + (" nor a JWT" if self._jwts is not None else "; JWTs are not enabled"),
            )
        if self._mtls is not None:
            principal = self._mtls.identify(context.auth_context())
            if principal is not None:
                return principal
        raise AuthError(AuthReason.MISSING_CREDENTIALS, f"this call needs credentials: {_HOW}")

    def forget_key(self, key_id: str) -> None:
        """Drop a key's cached verdict now (this process revoked or rotated it)."""
        self._keys.forget(key_id)

    async def close(self) -> None:
        if self._jwts is not None:
            await self._jwts.close()


def store_key_lookup(store: Store) -> Any:
    """The store as the narrow lookup KeyAuthenticator needs (one read per miss)."""

    async def lookup(key_id: str, /) -> KeyRecord | None:
        try:
            owner = await store.get_key_with_owner(key_id)
        except NotFoundError:
            return None
        return KeyRecord(
            owner.key,
            consumer_disabled=bool(owner.consumer and owner.consumer.disabled),
            tenant_disabled=bool(owner.tenant and owner.tenant.disabled),
        )

    return lookup


class AuthInterceptor(HandlerInterceptor):
    def __init__(self, authenticator: Authenticator) -> None:
        super().__init__()
        self._authenticator = authenticator

    def wrap_unary(self, behavior: UnaryBehavior, method: str) -> UnaryBehavior:
        authenticate = self._authenticator.authenticate

        async def unary(request: Any, context: Context) -> Any:
            callstate.principal.set(await authenticate(context))
            return await behavior(request, context)

        return unary

    def wrap_stream(self, behavior: StreamBehavior, method: str) -> StreamBehavior:
        authenticate = self._authenticator.authenticate

        async def stream(request: Any, context: Context) -> AsyncGenerator[Any, None]:
            callstate.principal.set(await authenticate(context))
            async with aclosing(behavior(request, context)) as responses:
                async for response in responses:
                    yield response

        return stream
