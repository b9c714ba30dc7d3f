"""`unigate admin ...`: the AdminService for operators, over gRPC.

    unigate admin tenants create acme --plaintext
    unigate admin subscriptions list --status pending --output json --plaintext
    unigate admin bootstrap --config gateway.yaml      # the first admin key, no server

Credentials: `--api-key`, or UNIGATE_ADMIN_KEY (better: not in the process list).
TLS is on unless `--plaintext`, as with grpcurl, so an admin key is never sent in
clear text by accident. Exit codes: 0 done; 1 the call failed (its status code,
message and ErrorInfo reason on stderr); 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message

from unigate.gateway.admin_cli_commands import UsageError, add_rpc_commands
from unigate.gateway.admin_cli_output import describe_failure, render
from unigate.v1 import admin_pb2_grpc

DEFAULT_TARGET = "localhost:50051"
KEY_ENV = "UNIGATE_ADMIN_KEY"


def connection_parents() -> list[argparse.ArgumentParser]:
    connection = argparse.ArgumentParser(add_help=False)
    group = connection.add_argument_group("connection")
    group.add_argument("--target", default=DEFAULT_TARGET, help="the gateway (%(default)s)")
    group.add_argument("--api-key", help=f"an admin API key (default: ${KEY_ENV})")
    group.add_argument("--plaintext", action="store_true", help="connect without TLS")
    group.add_argument("--ca-cert", help="PEM file of the CA that signed the gateway's cert")
    group.add_argument("--client-cert", help="PEM client certificate, for mTLS")
    group.add_argument("--client-key", help="PEM key of --client-cert")
    group.add_argument("--timeout", type=float, default=10.0, help="seconds (%(default)s)")
    group.add_argument("--output", "-o", choices=["table", "json"], default="table")
    return [connection]


def add_admin_parser(subparsers: Any) -> None:
    """Add `admin` and its commands to the `unigate` command's subparsers."""
    admin = subparsers.add_parser(
        "admin", help="administer tenants, consumers, keys, services, subscriptions and quotas"
    )
    groups = admin.add_subparsers(dest="admin_group", required=True, metavar="GROUP")
    add_rpc_commands(groups, connection_parents(), _run_rpc)

    boot = groups.add_parser("bootstrap", help="create the first admin and print its key once")
    boot.add_argument("--config", required=True, help="the gateway's YAML configuration file")
    boot.add_argument("--name", default="admin", help="the first admin's name (%(default)s)")
    boot.set_defaults(run=_bootstrap)


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def open_channel(args: argparse.Namespace) -> grpc.Channel:
    tls_files = (args.ca_cert, args.client_cert, args.client_key)
    if args.plaintext:
        if any(tls_files):
            raise UsageError("--plaintext cannot be combined with --ca-cert or client certs")
        return grpc.insecure_channel(args.target)
    if (args.client_cert is None) != (args.client_key is None):
        raise UsageError("--client-cert and --client-key go together")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(args.ca_cert),
        private_key=_read(args.client_key),
        certificate_chain=_read(args.client_cert),
    )
    return grpc.secure_channel(args.target, credentials)


def call_metadata(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    key = args.api_key or os.environ.get(KEY_ENV, "")
    if key:
        return (("authorization", f"Bearer {key}"),)
    if args.client_cert:
        return ()
    raise UsageError(f"no admin key: pass --api-key or set {KEY_ENV}")


def _call(args: argparse.Namespace, channel: grpc.Channel) -> Message:
    method = getattr(admin_pb2_grpc.AdminServiceStub(channel), args.rpc)
    request = args.build(args)
    metadata = call_metadata(args)
    response: Message = method(request, metadata=metadata, timeout=args.timeout)
    listed = next(f.name for f in response.DESCRIPTOR.fields) if args.listing else ""
    while args.listing and args.all and getattr(response, "next_page_token", ""):
        request.page_token = response.next_page_token  # type: ignore[attr-defined]
        more = method(request, metadata=metadata, timeout=args.timeout)
        getattr(response, listed).extend(getattr(more, listed))
        response.next_page_token = more.next_page_token  # type: ignore[attr-defined]
    return response


def _run_rpc(args: argparse.Namespace) -> int:
    try:
        with open_channel(args) as channel:
            response = _call(args, channel)
    except UsageError as exc:
        print(f"unigate admin: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as error:
        print(f"unigate admin: {describe_failure(error)}", file=sys.stderr)
        return 1
    render(response, args.output, sys.stdout)
    if getattr(response, "secret", ""):
        print("unigate admin: store the secret now: it is shown only once", file=sys.stderr)
    return 0


def _bootstrap(args: argparse.Namespace) -> int:
    from unigate.gateway.config import ConfigError, load_config
    from unigate.gateway.services.admin_keys import BootstrapRefused, bootstrap_admin
    from unigate.gateway.store.factory import open_store

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"unigate: {exc}", file=sys.stderr)
        return 2

    async def bootstrap() -> str:
        store = await open_store(config.store.url)
        try:
            return await bootstrap_admin(store, args.name)
        finally:
            await store.close()

    try:
        key = asyncio.run(bootstrap())
    except BootstrapRefused as exc:
        print(f"unigate admin: bootstrap refused: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a store that cannot be opened: say why, never a traceback
        print(f"unigate admin: bootstrap failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(key)
    print(
        f"unigate admin: global admin {args.name!r} created. The key above is shown only"
        f" once: store it now, e.g. export {KEY_ENV}=<key>",
        file=sys.stderr,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`unigate admin ...` on its own (tests; `unigate` itself adds it to its parser)."""
    parser = argparse.ArgumentParser(prog="unigate")
    add_admin_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code
