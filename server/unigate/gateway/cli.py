"""The `unigate` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from unigate.gateway import __version__
from unigate.gateway.admin_cli import add_admin_parser
from unigate.gateway.logs_cli import add_logs_parser


def _serve(args: argparse.Namespace) -> int:
    from unigate.gateway.app import serve
    from unigate.gateway.config import ConfigError, load_config
    from unigate.gateway.observability.logs import configure_logging

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"unigate: {exc}", file=sys.stderr)
        return 2
    logs = configure_logging(args.log_level or config.logging.level, config.logging.format)
    problem: OSError | None = None
    try:
        _run(serve(config, args.host, args.port))
    except OSError as exc:
        problem = exc
    finally:
        logs.stop()  # flush what is queued before anything else reaches stderr
    if problem is not None:
        print(f"unigate: {problem}", file=sys.stderr)
        return 1
    return 0


def _run(coro: object) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep working without it
        asyncio.run(coro)  # type: ignore[arg-type]
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coro)  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unigate", description="A gRPC-native gateway for calling AI models."
    )
    parser.add_argument("--version", action="version", version=f"unigate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", required=True, help="the gateway's YAML configuration file")
    serve.add_argument("--host", help="the address to listen on (default: server.host)")
    serve.add_argument("--port", type=int, help="the port to listen on (default: server.port)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(run=_serve)
    add_admin_parser(commands)
    add_logs_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
