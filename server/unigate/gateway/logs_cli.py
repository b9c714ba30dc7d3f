"""`unigate logs ...`: recorded calls and usage statistics from the AdminService.

    unigate logs tail -f --alias gpt --errors --plaintext
    unigate logs stats --since 7d --bucket day --by alias --plaintext

Connection options and credentials are those of `unigate admin` (admin_cli.py).
Exit codes: 0 done (also when Ctrl-C stops `tail --follow`); 1 the call failed
(its status code and message on stderr); 2 usage; 130 Ctrl-C otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from unigate.gateway.admin_cli import call_metadata, connection_parents, open_channel
from unigate.gateway.admin_cli_commands import UsageError
from unigate.gateway.admin_cli_output import describe_failure, render
from unigate.gateway.config_types import parse_duration
from unigate.gateway.logs_cli_output import as_json, call_line, write_usage
from unigate.v1 import admin_pb2 as pb
from unigate.v1 import admin_pb2_grpc

FOLLOW_INTERVAL = 1.0
FOLLOW_PAGE_SIZE = 500
_JSON = "JSON (one line per call for tail), as --output json"

BUCKETS = {
    "minute": pb.USAGE_BUCKET_MINUTE,
    "hour": pb.USAGE_BUCKET_HOUR,
    "day": pb.USAGE_BUCKET_DAY,
}
GROUPS = {
    "tenant": pb.USAGE_GROUP_BY_TENANT,
    "consumer": pb.USAGE_GROUP_BY_CONSUMER,
    "alias": pb.USAGE_GROUP_BY_ALIAS,
    "provider": pb.USAGE_GROUP_BY_PROVIDER,
}


def _seconds(text: str) -> float:
    try:
        return float(parse_duration(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _duration(text: str) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(round(_seconds(text) * 1e9))
    return duration


def _moment(text: str) -> timestamp_pb2.Timestamp:
    """A duration ago (`90m`, `24h`, `7d`) or an ISO 8601 time (UTC unless it says)."""
    stamp = timestamp_pb2.Timestamp()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            ago = float(parse_duration(text))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is neither a duration ago (30m, 24h, 7d) nor an ISO 8601 time"
            ) from None
        stamp.FromNanoseconds(round((time.time() - ago) * 1e9))
        return stamp
    stamp.FromDatetime(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    return stamp


def _filters(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filters")
    group.add_argument("--since", type=_moment, help="a duration ago (24h) or an ISO time")
    group.add_argument("--until", type=_moment, help="a duration ago or an ISO time (now)")
    group.add_argument("--tenant", default="", help="a tenant id (tenant admins: their own)")
    group.add_argument("--consumer", default="", help="a consumer id")
    group.add_argument("--alias", default="", help="a model alias")


def add_logs_parser(subparsers: Any) -> None:
    """Add `logs` and its commands to the `unigate` command's subparsers."""
    logs = subparsers.add_parser("logs", help="recorded calls and usage statistics")
    commands = logs.add_subparsers(dest="logs_command", required=True, metavar="COMMAND")
    parents = connection_parents()

    tail = commands.add_parser("tail", parents=parents, help="the latest calls, or follow them")
    _filters(tail)
    tail.add_argument("--follow", "-f", action="store_true", help="print new calls until Ctrl-C")
    tail.add_argument("--lines", "-n", type=int, default=20, help="calls first shown (20)")
    tail.add_argument("--errors", action="store_true", help="only calls that failed")
    tail.add_argument("--code", action="append", default=[], help="a gRPC status, e.g. UNAVAILABLE")
    tail.add_argument("--min-latency", type=_duration, help="e.g. 500ms, 2s")
    tail.add_argument("--request-id", default="", help="one call by its request id")
    tail.add_argument("--interval", type=_seconds, default=FOLLOW_INTERVAL, help=argparse.SUPPRESS)
    tail.add_argument("--json", dest="output", action="store_const", const="json", help=_JSON)
    tail.set_defaults(run=_tail)

    stats = commands.add_parser("stats", parents=parents, help="usage per time bucket")
    _filters(stats)
    stats.add_argument("--provider", default="", help="a provider block")
    stats.add_argument("--bucket", choices=list(BUCKETS), default="hour", help="(hour)")
    stats.add_argument("--by", choices=list(GROUPS), help="one row per tenant, consumer, ...")
    stats.add_argument("--json", dest="output", action="store_const", const="json", help=_JSON)
    stats.set_defaults(run=_stats)


@contextlib.contextmanager
def _admin(args: argparse.Namespace) -> Iterator[Callable[[str, Any], Any]]:
    """`call(rpc, request)` on the AdminService with the command's credentials."""
    metadata = call_metadata(args)
    with open_channel(args) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        yield lambda rpc, request: getattr(stub, rpc)(
            request, metadata=metadata, timeout=args.timeout
        )


def _guarded(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Failures as one message on stderr and an exit code, never a traceback."""
    try:
        return command(args)
    except UsageError as exc:
        print(f"unigate logs: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as error:
        print(f"unigate logs: {describe_failure(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0 if getattr(args, "follow", False) else 130
    except BrokenPipeError:  # e.g. `| head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _tail(args: argparse.Namespace) -> int:
    return _guarded(_tail_calls, args)


def _stats(args: argparse.Namespace) -> int:
    return _guarded(_usage, args)


def _list_request(args: argparse.Namespace) -> pb.ListCallLogsRequest:
    if args.lines < 1:
        raise UsageError("--lines must be 1 or more")
    return pb.ListCallLogsRequest(
        start_time=args.since,
        end_time=args.until,
        tenant_id=args.tenant,
        consumer_id=args.consumer,
        alias=args.alias,
        codes=args.code,
        errors_only=args.errors,
        min_latency=args.min_latency,
        request_id=args.request_id,
        page_size=args.lines,
    )


def _print_calls(calls: Sequence[pb.CallLog], output: str) -> None:
    for log in calls:
        print(as_json(log) if output == "json" else call_line(log), flush=True)


def _tail_calls(args: argparse.Namespace) -> int:
    request = _list_request(args)
    with _admin(args) as call:
        latest = list(reversed(call("ListCallLogs", request).call_logs))  # oldest first
        _print_calls(latest, args.output)
        if not args.follow:
            if not latest:
                print("unigate logs: no calls match", file=sys.stderr)
            return 0
        after = max((log.id for log in latest), default=0)
        request.page_size = FOLLOW_PAGE_SIZE
        while True:
            request.after_id = after
            page = call("ListCallLogs", request)
            _print_calls(page.call_logs, args.output)
            after = max((log.id for log in page.call_logs), default=after)
            if not page.next_page_token:
                time.sleep(args.interval)


def _usage(args: argparse.Namespace) -> int:
    request = pb.GetUsageStatsRequest(
        start_time=args.since,
        end_time=args.until,
        bucket=BUCKETS[args.bucket],
        group_by=GROUPS[args.by] if args.by else pb.USAGE_GROUP_BY_UNSPECIFIED,
        tenant_id=args.tenant,
        consumer_id=args.consumer,
        alias=args.alias,
        provider=args.provider,
    )
    with _admin(args) as call:
        response = call("GetUsageStats", request)
    if args.output == "json":
        render(response, "json", sys.stdout)
    else:
        write_usage(response, sys.stdout)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`unigate logs ...` on its own (tests; `unigate` itself adds it to its parser)."""
    parser = argparse.ArgumentParser(prog="unigate")
    add_logs_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code
