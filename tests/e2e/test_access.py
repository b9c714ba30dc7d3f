"""The approval flow from outside, through grpcurl and `unigate admin`:
a new consumer is denied, subscribes, is still denied while pending, is approved,
passes; a revoked key fails within the documented bound."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
import yaml

from tests.store.conftest import RUN_PREFIX, drop_schemas, postgres_dsn, run_sync

from .conftest import GatewayProcess, gateway_env, launch
from .test_grpcurl import json_messages

pytestmark = pytest.mark.e2e
__all__ = ["postgres_dsn"]  # the fixture, shared with the store suite

UNIGATE = (sys.executable, "-m", "unigate.gateway")
ADMIN_FLAGS = ("--plaintext", "--output", "json")
KEY_PATTERN = re.compile(r"\bug_[A-Za-z0-9]+_[A-Za-z0-9]+\b")


@dataclass
class Deployment:
    gateway: GatewayProcess
    config_path: Path
    admin_key: str
    grpcurl: str

    def grpcurl_call(self, method: str, body: dict[str, Any], key: str | None) -> tuple[int, str]:
        command = [self.grpcurl, "-plaintext", "-max-time", "20", "-d", json.dumps(body)]
        if key is not None:
            command += ["-rpc-header", f"authorization: Bearer {key}"]
        result = subprocess.run(
            [*command, self.gateway.address, method],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return result.returncode, result.stdout + result.stderr

    def admin(self, *words: str) -> Any:
        result = subprocess.run(
            [*UNIGATE, "admin", *words, "--target", self.gateway.address, *ADMIN_FLAGS],
            capture_output=True,
            text=True,
            timeout=30,
            env=gateway_env(UNIGATE_ADMIN_KEY=self.admin_key),
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def write_config(directory: Path, store_url: str, cache_ttl: str) -> Path:
    config = {
        "auth": {"api_keys": {"cache_ttl": cache_ttl}, "access_cache_ttl": "0s"},
        "store": {"url": store_url},
        "providers": {"local-mock": {"kind": "mock"}},
        "models": {"mock": {"deployments": [{"provider": "local-mock", "model": "echo"}]}},
    }
    path = directory / "gateway.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/unigate.db"
        return
    dsn: str = request.getfixturevalue("postgres_dsn")
    schema = f"{RUN_PREFIX}_e2e_{secrets.token_hex(4)}"
    yield f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"
    run_sync(drop_schemas(dsn, schema))


@pytest.fixture
def deployment(tmp_path: Path, grpcurl: str, store_url: str) -> Iterator[Deployment]:
    config_path = write_config(tmp_path, store_url, "1s")
    bootstrap = subprocess.run(
        [*UNIGATE, "admin", "bootstrap", "--config", str(config_path), "--name", "ops"],
        capture_output=True,
        text=True,
        timeout=30,
        env=gateway_env(),
    )
    assert bootstrap.returncode == 0, bootstrap.stderr
    [admin_key] = KEY_PATTERN.findall(bootstrap.stdout)
    again = subprocess.run(
        [*UNIGATE, "admin", "bootstrap", "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=gateway_env(),
    )
    assert again.returncode == 1 and "refused" in again.stderr
    gateway = launch(config_path, tmp_path / "gateway.log")
    yield Deployment(gateway, config_path, admin_key, grpcurl)
    gateway.stop()
    assert admin_key not in gateway.log()


def chat_body(text: str) -> dict[str, Any]:
    return {"model": "mock", "messages": [{"role": "ROLE_USER", "content": [{"text": text}]}]}


def reason_of(output: str) -> str:
    found = re.search(r'"reason":\s*"([A-Z_]+)"', output)
    return found.group(1) if found else ""


CHAT = "unigate.v1.InferenceService/Chat"
ADMIN = "unigate.v1.AdminService/"


def test_approval_flow(deployment: Deployment) -> None:
    d = deployment
    code, out = d.grpcurl_call(CHAT, chat_body("hi"), None)
    assert code != 0 and "Code: Unauthenticated" in out
    assert reason_of(out) == "MISSING_CREDENTIALS"

    tenant = d.admin("tenants", "create", "acme")["tenant"]
    d.admin("services", "upsert", "mock", "--tenant", tenant["id"], "--requires-approval")
    consumer = d.admin("consumers", "create", "billing", "--tenant", tenant["id"])["consumer"]
    created = d.admin("keys", "create", "--consumer", consumer["id"], "--name", "billing-key")
    key = created["secret"]
    assert KEY_PATTERN.fullmatch(key)

    code, out = d.grpcurl_call(CHAT, chat_body("hi"), key)
    assert "Code: PermissionDenied" in out and reason_of(out) == "SUBSCRIPTION_MISSING"
    assert "request one" in out

    code, out = d.grpcurl_call(ADMIN + "RequestSubscription", {"alias": "mock"}, key)
    assert code == 0, out
    [requested] = json_messages(out)
    assert requested["subscription"]["status"] == "SUBSCRIPTION_STATUS_PENDING"

    code, out = d.grpcurl_call(CHAT, chat_body("hi"), key)
    assert "Code: PermissionDenied" in out and reason_of(out) == "SUBSCRIPTION_PENDING"

    pending = d.admin("subscriptions", "list", "--status", "pending")
    [waiting] = pending["subscriptions"]
    d.admin("subscriptions", "approve", waiting["id"])

    code, out = d.grpcurl_call(CHAT, chat_body("approved at last"), key)
    assert code == 0, out
    [reply] = json_messages(out)
    assert reply["message"]["content"] == [{"text": "approved at last"}]

    code, out = d.grpcurl_call("unigate.v1.InferenceService/ListModels", {}, key)
    assert [m["alias"] for m in json_messages(out)[0]["models"]] == ["mock"]

    # A second gateway process on the same store: the revocation below goes through the
    # first, so only the documented cache bound (auth.api_keys.cache_ttl, 1 s here) ends
    # the key's life in the second.
    other = launch(d.config_path, d.config_path.parent / "second.log")
    try:
        second = Deployment(other, d.config_path, d.admin_key, d.grpcurl)
        code, out = second.grpcurl_call(CHAT, chat_body("warm the cache"), key)
        assert code == 0, out
        d.admin("keys", "revoke", created["api_key"]["id"])
        revoked_at = time.monotonic()
        while time.monotonic() - revoked_at < 5:
            code, out = second.grpcurl_call(CHAT, chat_body("still?"), key)
            if code != 0:
                break
            time.sleep(0.1)
        assert "Code: Unauthenticated" in out and reason_of(out) == "REVOKED_API_KEY"
        # 1 s of cache, plus one grpcurl start-up (~0.1-0.3 s) on either side.
        assert time.monotonic() - revoked_at < 2.5
        # In the process that revoked it, the key fails at once.
        code, out = d.grpcurl_call(CHAT, chat_body("here?"), key)
        assert reason_of(out) == "REVOKED_API_KEY"
    finally:
        other.stop()


def test_consumer_cannot_administer(deployment: Deployment) -> None:
    d = deployment
    tenant = d.admin("tenants", "create", "globex")["tenant"]
    consumer = d.admin("consumers", "create", "app", "--tenant", tenant["id"])["consumer"]
    key = d.admin("keys", "create", "--consumer", consumer["id"])["secret"]
    _, out = d.grpcurl_call(ADMIN + "CreateTenant", {"name": "mine"}, key)
    assert "Code: PermissionDenied" in out and reason_of(out) == "ADMIN_ROLE_REQUIRED"
    _, out = d.grpcurl_call(ADMIN + "ListTenants", {}, "ug_" + "a" * 12 + "_" + "b" * 43)
    assert "Code: Unauthenticated" in out and reason_of(out) == "INVALID_API_KEY"


def test_tenant_admins_cannot_reach_another_tenant(deployment: Deployment) -> None:
    d = deployment
    acme = d.admin("tenants", "create", "acme-iso")["tenant"]["id"]
    globex = d.admin("tenants", "create", "globex-iso")["tenant"]["id"]
    secret_consumer = d.admin("consumers", "create", "secret-app", "--tenant", globex)
    admin = d.admin("admins", "create", "acme-ops", "--tenant", acme)["admin"]
    key = d.admin("keys", "create", "--admin", admin["id"])["secret"]

    code, out = d.grpcurl_call(ADMIN + "GetTenant", {"tenant_id": globex}, key)
    assert "Code: NotFound" in out and reason_of(out) == "RESOURCE_NOT_FOUND"
    _, missing = d.grpcurl_call(ADMIN + "GetTenant", {"tenant_id": "ten_nonexistent"}, key)
    assert out.split("Details")[0].replace(globex, "X") == missing.split("Details")[0].replace(
        "ten_nonexistent", "X"
    ), "another tenant's record must look exactly like a missing one"

    consumer_id = secret_consumer["consumer"]["id"]
    _, out = d.grpcurl_call(ADMIN + "GetConsumer", {"consumer_id": consumer_id}, key)
    assert "Code: NotFound" in out
    code, out = d.grpcurl_call(ADMIN + "ListConsumers", {"tenant_id": globex}, key)
    assert consumer_id not in out
    code, out = d.grpcurl_call(ADMIN + "ListTenants", {}, key)
    assert code == 0, out
    assert globex not in out and acme in out


def test_bad_jwts_through_grpcurl(tmp_path: Path, grpcurl: str) -> None:
    secret = "e2e-jwt-secret-at-least-32-bytes-long"
    config = {
        "auth": {
            "jwt": {"enabled": True, "algorithms": ["HS256"], "secret": secret, "audience": "ug"}
        },
        "store": {"url": f"sqlite:///{tmp_path}/unigate.db"},
        "providers": {"m": {"kind": "mock"}},
        "models": {"mock": {"deployments": [{"provider": "m", "model": "echo"}]}},
    }
    path = tmp_path / "jwt.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    gateway = launch(path, tmp_path / "jwt.log")
    d = Deployment(gateway, path, "", grpcurl)
    base = {"sub": "con_x", "tenant": "ten_x", "aud": "ug", "exp": int(time.time()) + 600}
    cases = {
        "EXPIRED_TOKEN": pyjwt.encode({**base, "exp": int(time.time()) - 600}, secret, "HS256"),
        "INVALID_TOKEN": pyjwt.encode(base, "another-secret-that-is-32-bytes-long", "HS256"),
    }
    wrong_audience = pyjwt.encode({**base, "aud": "other"}, secret, "HS256")
    alg_none = pyjwt.encode(base, None, "none")
    try:
        for reason, token in cases.items():
            _, out = d.grpcurl_call(CHAT, chat_body("hi"), token)
            assert "Code: Unauthenticated" in out and reason_of(out) == reason, out
        for token in (wrong_audience, alg_none):
            _, out = d.grpcurl_call(CHAT, chat_body("hi"), token)
            assert "Code: Unauthenticated" in out and reason_of(out) == "INVALID_TOKEN", out
        # A well-signed token for a consumer the store does not know is refused too.
        _, out = d.grpcurl_call(CHAT, chat_body("hi"), pyjwt.encode(base, secret, "HS256"))
        assert "Code: Unauthenticated" in out and reason_of(out) == "UNKNOWN_TENANT", out
    finally:
        gateway.stop()
