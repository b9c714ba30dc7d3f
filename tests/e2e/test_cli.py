"""`unigate` on the command line: start-up errors an operator can act on, and `make run`."""

from __future__ import annotations

import importlib.metadata
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from unigate.gateway import __version__
from unigate.gateway.providers.registry import PROVIDER_KINDS
from unigate.v1 import inference_pb2 as pb
from unigate.v1 import inference_pb2_grpc

from .conftest import UNIGATE, SpawnGateway, free_port, gateway_env

pytestmark = pytest.mark.e2e

EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "examples" / "gateway.yaml"
UNSET = "UNIGATE_TEST_SURELY_UNSET_VAR"
MOCK_BLOCKS = """\
providers:
  local:
    kind: mock
models:
  m:
    deployments:
      - provider: {provider}
        model: echo
"""


def run_serve(config: Path, port: int | None = None) -> subprocess.CompletedProcess[str]:
    command = [*UNIGATE, "serve", "--config", str(config), "--host", "127.0.0.1"]
    command += ["--port", str(port if port is not None else free_port())]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=20,
        env=gateway_env(),
        cwd=config.parent,  # the default SQLite store (call logs) lands beside the config
    )


def chat(target: str, model: str, text: str) -> pb.ChatResponse:
    request = pb.ChatRequest(
        model=model, messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=text)])]
    )
    with grpc.insecure_channel(target) as channel:
        reply: pb.ChatResponse = inference_pb2_grpc.InferenceServiceStub(channel).Chat(
            request, timeout=10
        )
        return reply


def list_models(target: str) -> list[str]:
    with grpc.insecure_channel(target) as channel:
        reply = inference_pb2_grpc.InferenceServiceStub(channel).ListModels(
            pb.ListModelsRequest(), timeout=10
        )
        return [model.alias for model in reply.models]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param(
            "server: {prot: 1}\n",
            ": server.prot: unknown key",
            id="unknown-key",
        ),
        pytest.param(
            "server: {port: abc}\n",
            ": server.port: Input should be a valid integer, unable to parse string as an integer"
            " (got 'abc')",
            id="wrong-type",
        ),
        pytest.param(
            MOCK_BLOCKS.format(provider="local").removesuffix("        model: echo\n"),
            ": models.m.deployments[0].model: required key is missing",
            id="missing-nested-key",
        ),
        pytest.param(
            f"providers:\n  x:\n    kind: openai\n    api_key: ${{{UNSET}}}\n",
            f": providers.x.api_key: environment variable {UNSET} is not set"
            f" (set it, or write ${{{UNSET}:-}} to make it optional)",
            id="missing-env-var",
        ),
        pytest.param(
            "providers:\n  x:\n    kind: bogus\n",
            ": providers.x.kind: unknown provider kind 'bogus'"
            f" (one of: {', '.join(sorted(PROVIDER_KINDS))})",
            id="unknown-provider-kind",
        ),
        pytest.param(
            MOCK_BLOCKS.format(provider="ghost"),
            ": models.m.deployments[0].provider: no provider block named 'ghost' (defined: local)",
            id="undefined-provider-block",
        ),
        pytest.param(
            "server:\n  port: [1, 2\n",
            " line 3, column 1: expected ',' or ']', but got '<stream end>'",
            id="invalid-yaml",
        ),
    ],
)
def test_bad_config_stops_start_up_with_one_message(
    tmp_path: Path, text: str, problem: str
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text, encoding="utf-8")
    result = run_serve(config)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [f"unigate: config error in {config}{problem}"]
    assert result.stdout == ""


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    result = run_serve(missing)
    assert result.returncode == 2, result
    expected = f"unigate: config error: cannot read {missing}: No such file or directory"
    assert result.stderr.splitlines() == [expected]


def test_empty_optional_key_disables_its_provider_only(spawn_gateway: SpawnGateway) -> None:
    config = {
        "logging": {"format": "text"},
        "auth": {"enabled": False},
        "providers": {
            "local": {"kind": "mock"},
            "vendor": {"kind": "openai", "api_key": "${UNIGATE_TEST_SURELY_UNSET_KEY:-}"},
        },
        "models": {
            "mock": {"deployments": [{"provider": "local", "model": "echo"}]},
            "vendor-model": {"deployments": [{"provider": "vendor", "model": "gpt"}]},
        },
    }
    gateway = spawn_gateway(config)
    disabled_lines = [line for line in gateway.log().splitlines() if "provider" in line]
    assert len(disabled_lines) == 1, disabled_lines
    assert (
        "provider 'vendor' disabled: its api_key is empty (set UNIGATE_TEST_SURELY_UNSET_KEY);"
        " model aliases not served: vendor-model"
    ) in disabled_lines[0]
    reply = chat(gateway.address, "mock", "still serving")
    assert reply.message.content[0].text == "still serving"
    assert list_models(gateway.address) == ["mock"]
    with pytest.raises(grpc.RpcError) as disabled:
        chat(gateway.address, "vendor-model", "hi")
    assert disabled.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = disabled.value.details() or ""
    assert details.startswith("model alias 'vendor-model' is disabled: "), details
    assert "provider 'vendor': its api_key is empty" in details


def test_version() -> None:
    entry_point = Path(sys.executable).parent / "unigate"
    assert entry_point.exists(), "the `unigate` entry point is not installed: run `make test`"
    result = subprocess.run(
        [str(entry_point), "--version"], capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 0, result
    assert result.stdout == f"unigate {__version__}\n"
    assert importlib.metadata.version("unigate") == __version__


def test_port_in_use_exits_1_with_a_clear_message(tmp_path: Path) -> None:
    config = tmp_path / "ok.yaml"
    config.write_text(MOCK_BLOCKS.format(provider="local"), encoding="utf-8")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_serve(config, port)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    ours = [line for line in result.stderr.splitlines() if line.startswith("unigate:")]
    assert len(ours) == 1, result.stderr
    assert ours[0].startswith(f"unigate: cannot listen on 127.0.0.1:{port}: ")
    assert "address already in use" in result.stderr.lower()


def test_make_run_serves_the_example_config(spawn_gateway: SpawnGateway) -> None:
    # As `make run` does: the example file, its own host, only the port moved.
    gateway = spawn_gateway(config_path=EXAMPLE_CONFIG, host=None, env=gateway_env())
    reply = chat(gateway.address, "mock", "hello from make run")
    assert reply.message.content[0].text == "hello from make run"
    assert reply.finish_reason == pb.FINISH_REASON_STOP
    assert reply.gateway.deployment == "local-mock/echo"
    assert list_models(gateway.address) == ["mock", "mock-embed"]
    assert "provider 'openai' disabled" in gateway.log()
