"""`unigate admin` against a real AdminService (tests/admin_harness.py): output
formats, exit codes (0 done, 1 call failed, 2 usage) and bootstrap."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.admin_harness import AdminServer, admin_server
from unigate.gateway import admin_cli
from unigate.gateway.identity.keys import parse_key

__all__ = ["admin_server"]  # the fixture, imported for pytest


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Cli:
    server: AdminServer
    capsys: pytest.CaptureFixture[str]
    config: Path

    async def run(self, *argv: str, connect: bool = True) -> Result:
        """`unigate admin <argv>` in a thread (it blocks), as the bootstrapped admin."""
        args = ["admin", *argv]
        if connect:
            args += ["--target", self.server.target, "--plaintext"]
        self.capsys.readouterr()
        code = await asyncio.to_thread(admin_cli.main, args)
        captured = self.capsys.readouterr()
        assert "Traceback" not in captured.err
        return Result(code, captured.out, captured.err)

    async def json(self, *argv: str) -> dict[str, object]:
        result = await self.run(*argv, "--output", "json")
        assert result.code == 0, result.err
        parsed: dict[str, object] = json.loads(result.out)
        return parsed


@pytest.fixture
async def cli(
    admin_server: AdminServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Cli:
    config = tmp_path / "gateway.yaml"
    config.write_text(f'store:\n  url: "sqlite:///{tmp_path / "unigate.db"}"\n')
    handle = Cli(admin_server, capsys, config)
    booted = await handle.run("bootstrap", "--config", str(config), "--name", "root", connect=False)
    assert booted.code == 0, booted.err
    monkeypatch.setenv(admin_cli.KEY_ENV, booted.out.strip())
    return handle


async def test_bootstrap_prints_a_working_key_once_and_refuses_twice(cli: Cli) -> None:
    # The fixture bootstrapped already; its key is in the environment.
    assert await cli.server.store.count_admins() == 1
    again = await cli.run("bootstrap", "--config", str(cli.config), connect=False)
    assert again.code == 1 and again.out == ""
    assert "bootstrap refused" in again.err and "admin exists already" in again.err
    assert await cli.server.store.count_admins() == 1
    created = await cli.run("tenants", "create", "acme")
    assert created.code == 0, created.err  # the bootstrapped key administers


async def test_bootstrap_output_is_just_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "g.yaml"
    config.write_text(f'store:\n  url: "sqlite:///{tmp_path / "fresh.db"}"\n')
    code = await asyncio.to_thread(admin_cli.main, ["admin", "bootstrap", "--config", str(config)])
    captured = capsys.readouterr()
    assert code == 0
    assert parse_key(captured.out.strip()) is not None
    assert "shown only once" in captured.err


async def test_bootstrap_with_a_bad_config_is_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await asyncio.to_thread(
        admin_cli.main, ["admin", "bootstrap", "--config", str(tmp_path / "missing.yaml")]
    )
    assert code == 2
    assert "cannot read" in capsys.readouterr().err


async def test_table_and_json_output(cli: Cli) -> None:
    table = await cli.run("tenants", "create", "acme")
    lines = table.out.splitlines()
    assert lines[0].split() == ["id", "name", "disabled", "create_time"]
    assert lines[1].split()[1:3] == ["acme", "no"]
    assert lines[1].split()[3].endswith("Z")
    tenant = await cli.json("tenants", "get", lines[1].split()[0])
    assert tenant["tenant"] == {
        "id": lines[1].split()[0],
        "name": "acme",
        "disabled": False,
        "create_time": tenant["tenant"]["create_time"],  # type: ignore[index]
    }
    listed = await cli.json("tenants", "list")
    assert [t["name"] for t in listed["tenants"]] == ["acme"]  # type: ignore[attr-defined,index]
    assert listed["next_page_token"] == ""


async def test_operator_flow_keys_and_subscriptions(cli: Cli) -> None:
    tenant = (await cli.json("tenants", "create", "acme"))["tenant"]["id"]  # type: ignore[index]
    app = (await cli.json("consumers", "create", "app", "--tenant", tenant))["consumer"]["id"]  # type: ignore[index]
    created = await cli.run(
        "keys", "create", "--consumer", app, "--name", "prod", "--expires-in", "720h"
    )
    assert created.code == 0
    assert "shown only once" in created.err
    secret = next(
        line.split(": ", 1)[1] for line in created.out.splitlines() if line.startswith("secret: ")
    )
    assert parse_key(secret) is not None
    listed = await cli.run("keys", "list", "--consumer", app)
    assert secret not in listed.out and secret[-43:] not in listed.out
    key_id = parse_key(secret)[0]  # type: ignore[index]
    rotated = await cli.json("keys", "rotate", key_id, "--grace", "1h")
    assert rotated["previous_api_key"]["revoke_time"]  # type: ignore[index]
    assert rotated["secret"] != secret
    assert (await cli.run("keys", "revoke", key_id)).code == 0

    await cli.run("services", "upsert", "gpt", "--tenant", tenant)
    services = await cli.run("services", "list", "--tenant", tenant)
    assert "gpt" in services.out and "yes" in services.out
    asked = await cli.json("subscriptions", "request", "gpt", "--consumer", app)
    sub = asked["subscription"]["id"]  # type: ignore[index]
    assert asked["subscription"]["status"] == "SUBSCRIPTION_STATUS_PENDING"  # type: ignore[index]
    pending = await cli.run("subscriptions", "list", "--status", "pending")
    assert sub in pending.out and "pending" in pending.out
    approved = await cli.run("subscriptions", "approve", sub, "--note", "welcome")
    assert approved.code == 0 and "approved" in approved.out and "welcome" in approved.out
    none_pending = await cli.run("subscriptions", "list", "--status", "pending")
    assert none_pending.out.strip() == "(none)"
    assert (await cli.run("subscriptions", "revoke", sub)).code == 0
    rejected = await cli.run("subscriptions", "reject", sub)
    assert rejected.code == 1 and "FAILED_PRECONDITION" in rejected.err


async def test_update_and_list_every_page(cli: Cli) -> None:
    for name in ("t1", "t2", "t3"):
        await cli.run("tenants", "create", name)
    first = await cli.json("tenants", "list", "--page-size", "2")
    assert len(first["tenants"]) == 2 and first["next_page_token"]  # type: ignore[arg-type]
    everything = await cli.json("tenants", "list", "--page-size", "2", "--all")
    assert len(everything["tenants"]) == 3 and everything["next_page_token"] == ""  # type: ignore[arg-type]
    tenant_id = everything["tenants"][0]["id"]  # type: ignore[index]
    updated = await cli.json("tenants", "update", tenant_id, "--name", "renamed", "--disable")
    assert updated["tenant"]["name"] == "renamed" and updated["tenant"]["disabled"] is True  # type: ignore[index]


async def test_failed_call_exits_1_with_code_message_and_reason(cli: Cli) -> None:
    missing = await cli.run("tenants", "get", "ten_nope")
    assert missing.code == 1 and missing.out == ""
    assert missing.err.startswith("unigate admin: NOT_FOUND: tenant 'ten_nope' not found")
    assert "(reason RESOURCE_NOT_FOUND)" in missing.err
    invalid = await cli.run("tenants", "create", " ")
    assert invalid.code == 1
    assert "INVALID_ARGUMENT" in invalid.err and "name: required" in invalid.err
    assert invalid.err.count("name: required") == 1  # the message already names the field


async def test_bad_key_and_unreachable_gateway_exit_1(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(admin_cli.KEY_ENV, "ug_AAAAAAAAAAAA_" + "A" * 43)
    refused = await cli.run("tenants", "list")
    assert refused.code == 1 and "UNAUTHENTICATED" in refused.err
    assert "(reason INVALID_API_KEY)" in refused.err
    down = await cli.run(
        "tenants", "list", "--target", "127.0.0.1:1", "--timeout", "2", "--plaintext", connect=False
    )
    assert down.code == 1
    assert "UNAVAILABLE" in down.err or "DEADLINE_EXCEEDED" in down.err


@pytest.mark.parametrize(
    "argv",
    [
        ["tenants"],
        ["tenants", "create"],
        ["keys", "create", "--consumer", "c", "--admin", "a"],
        ["subscriptions", "list", "--status", "maybe"],
        ["keys", "rotate", "k", "--grace", "soon"],
        ["tenants", "list", "--output", "xml"],
        ["quotas", "usage", "--id", "ten_1"],
        ["quotas", "reset", "--scope", "planet", "--id", "x"],
    ],
)
async def test_usage_errors_exit_2(cli: Cli, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        await cli.run(*argv)
    assert caught.value.code == 2


async def test_usage_errors_found_after_parsing_exit_2(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    nothing = await cli.run("tenants", "update", "ten_x")
    assert nothing.code == 2 and "nothing to update" in nothing.err
    mixed = await cli.run("tenants", "list", "--ca-cert", "ca.pem")
    assert mixed.code == 2 and "--plaintext cannot be combined" in mixed.err
    monkeypatch.delenv(admin_cli.KEY_ENV)
    keyless = await cli.run("tenants", "list")
    assert keyless.code == 2 and admin_cli.KEY_ENV in keyless.err


async def test_quotas_without_policies_exit_1_with_the_reason(cli: Cli) -> None:
    tenant = (await cli.json("tenants", "create", "acme"))["tenant"]["id"]  # type: ignore[index]
    usage = await cli.run("quotas", "usage", "--scope", "tenant", "--id", str(tenant))
    assert usage.code == 1
    assert usage.err.startswith("unigate admin: FAILED_PRECONDITION: no quota policies")
    assert "QUOTAS_NOT_CONFIGURED" in usage.err
    reset = await cli.run("quotas", "reset", "--scope", "global")
    assert reset.code == 1 and "FAILED_PRECONDITION" in reset.err
