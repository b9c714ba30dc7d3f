"""Why authentication failed, as a GatewayError the error interceptor already reports.

AuthError(GatewayError)   reason from AuthReason, a message the caller can act on
  UNAUTHENTICATED         every reason but one: the caller must fix its credentials
  UNAVAILABLE             JWKS_UNAVAILABLE: the token may be fine, the keys could not
                          be fetched, so the caller should retry
"""

from __future__ import annotations

import grpc

from unigate.gateway.errors import GatewayError


class AuthReason:
    """Stable ErrorInfo reasons for authentication failures."""

    MISSING_CREDENTIALS = "MISSING_CREDENTIALS"
    MALFORMED_CREDENTIALS = "MALFORMED_CREDENTIALS"
    INVALID_API_KEY = "INVALID_API_KEY"
    EXPIRED_API_KEY = "EXPIRED_API_KEY"
    REVOKED_API_KEY = "REVOKED_API_KEY"
    DISABLED_CONSUMER = "DISABLED_CONSUMER"
    DISABLED_TENANT = "DISABLED_TENANT"
    UNKNOWN_CONSUMER = "UNKNOWN_CONSUMER"
    UNKNOWN_TENANT = "UNKNOWN_TENANT"
    INVALID_TOKEN = "INVALID_TOKEN"
    EXPIRED_TOKEN = "EXPIRED_TOKEN"
    JWKS_UNAVAILABLE = "JWKS_UNAVAILABLE"


class AuthError(GatewayError):
    def __init__(self, reason: str, message: str) -> None:
        code = (
            grpc.StatusCode.UNAVAILABLE
            if reason == AuthReason.JWKS_UNAVAILABLE
            else grpc.StatusCode.UNAUTHENTICATED
        )
        super().__init__(code, reason, message)
