"""The AdminService's routing RPC (AdminService inherits it): each deployment's
health as this process's router sees it.

Deployments belong to no tenant, so only global admins may list them. Health is
learnt per process (docs/routing.md): another gateway process may see the same
upstream differently.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from unigate.gateway.errors import GatewayError, Reason
from unigate.gateway.interceptors.base import Context
from unigate.gateway.routing.router import Router
from unigate.gateway.services import admin_convert as convert
from unigate.gateway.services.admin_access import not_found, require_global_admin
from unigate.v1 import admin_pb2 as pb
from unigate.v1 import admin_pb2_grpc

# ErrorInfo reason of an AdminService built without a router (embedded uses, tests).


class RoutingRpcs(admin_pb2_grpc.AdminServiceServicer):
    _router: Router | None
    _clock: Callable[[], float]

    async def ListDeployments(
        self, request: pb.ListDeploymentsRequest, context: Context
    ) -> pb.ListDeploymentsResponse:
        require_global_admin()
        if self._router is None:
            raise GatewayError(
                grpc.StatusCode.FAILED_PRECONDITION,
                Reason.ROUTING_NOT_CONFIGURED,
                "this AdminService was built without the gateway's router",
            )
        router = self._router
        routes = router.routes()
        if request.alias:
            routes = [r for r in routes if r.alias == request.alias]
            # A disabled alias (no provider credentials) is known, with nothing to list.
            if not routes and request.alias not in router.disabled_aliases:
                raise not_found("model alias", request.alias)
        now = self._clock()
        return pb.ListDeploymentsResponse(
            deployments=[
                convert.deployment_status_pb(route.alias, deployment, now)
                for route in routes
                for deployment in route.deployments
            ]
        )
