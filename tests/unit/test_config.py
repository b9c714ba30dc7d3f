"""Configuration: interpolation, defaults, and errors that name file, key and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from unigate.gateway.config import ConfigError, load_config, parse_config

BASE = """
providers:
  m: {kind: mock}
models:
  mock:
    deployments: [{provider: m, model: echo}]
"""


def error_of(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "gw.yaml", env=env or {})
    return str(caught.value)


def test_defaults_and_durations() -> None:
    config = parse_config(BASE + "server: {grace_period: 250ms, drain_delay: 2m, port: 9}\n")
    assert config.server.grace_period == pytest.approx(0.25)
    assert config.server.drain_delay == 120.0
    assert config.server.port == 9
    assert config.server.default_deadline == 300.0
    assert config.models["mock"].deployments[0].model == "echo"


def test_env_interpolation_required_and_default() -> None:
    text = BASE.replace("{kind: mock}", "{kind: mock, latency: '${LAT}'}")
    text += "server: {port: '${PORT:-7001}', host: '${HOST:-127.0.0.1}'}\n"
    config = parse_config(text, env={"LAT": "5ms"})
    assert config.server.port == 7001
    assert config.server.host == "127.0.0.1"
    assert config.providers["m"].latency == pytest.approx(0.005)  # type: ignore[attr-defined]


def test_missing_env_var_names_variable_and_key() -> None:
    text = BASE + "  gpt:\n    deployments: [{provider: o, model: g}]\n"
    text = text.replace("providers:\n", "providers:\n  o: {kind: openai, api_key: '${NOPE_KEY}'}\n")
    message = error_of(text)
    assert message.startswith("config error in gw.yaml: ")
    assert "providers.o.api_key" in message
    assert "NOPE_KEY is not set" in message
    assert "${NOPE_KEY:-}" in message


def test_empty_optional_key_disables_provider() -> None:
    text = BASE.replace("providers:\n", "providers:\n  o: {kind: openai, api_key: '${K:-}'}\n")
    config = parse_config(text, env={})
    assert "o" in config.disabled_providers
    assert config.disabled_providers["o"] == "its api_key is empty (set K)"
    assert parse_config(text, env={"K": "sk-test"}).disabled_providers == {}


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        (BASE + "server: {prot: 1}\n", "server.prot", "unknown key"),
        (BASE + "server: {port: abc}\n", "server.port", "valid integer"),
        (BASE + "server: {grace_period: soon}\n", "server.grace_period", "not a duration"),
        (BASE.replace("kind: mock", "kind: mokc"), "providers.m.kind", "unknown provider kind"),
        (BASE.replace("{kind: mock}", "{kind: mock, latncy: 1}"), "providers.m.latncy", "unknown"),
        (BASE.replace("provider: m,", "provider: x,"), "models.mock.deployments[0].provider", "x"),
        (BASE.replace("[{provider: m, model: echo}]", "[]"), "models.mock.deployments", "at least"),
        (
            BASE.replace("model: echo", "model: echo, modl: echo"),
            "models.mock.deployments[0].modl",
            "unknown key",
        ),
    ],
)
def test_errors_name_key_and_problem(text: str, key: str, problem: str) -> None:
    message = error_of(text)
    assert message.startswith(f"config error in gw.yaml: {key}: ")
    assert problem in message
    assert "Traceback" not in message


def test_yaml_syntax_error_has_line() -> None:
    message = error_of("server:\n  port: [1,\n")
    assert "gw.yaml line" in message


def test_missing_and_misspelt_keys_are_both_named() -> None:
    message = error_of(BASE.replace("model: echo", "modl: echo"))
    assert "  - models.mock.deployments[0].model: required key is missing" in message
    assert "  - models.mock.deployments[0].modl: unknown key" in message


def test_every_problem_is_listed() -> None:
    message = error_of(BASE + "server: {prot: 1, port: x}\nlogging: {level: loud}\n")
    for key in ("server.prot", "server.port", "logging.level"):
        assert key in message


def test_load_config_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config("/nonexistent/gateway.yaml")


def test_example_config_loads_without_openai_key() -> None:
    config = load_config(Path(__file__).parents[2] / "examples" / "gateway.yaml")
    assert "mock" in config.models
    assert set(config.providers) == {"local-mock", "openai", "anthropic", "gemini", "mistral"}


@pytest.mark.parametrize("providers", ["[a, b]", "x", "7"])
def test_providers_that_are_not_a_mapping(providers: str) -> None:
    message = error_of(BASE.replace("providers:\n  m: {kind: mock}\n", f"providers: {providers}\n"))
    assert "providers: must be a mapping" in message


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"server: {host: caf\xe9}\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(path)


def test_openai_base_url_must_be_absolute() -> None:
    text = BASE.replace("{kind: mock}", "{kind: mock}\n  o: {kind: openai, base_url: api.x.com/v1}")
    message = error_of(text)
    assert "providers.o.base_url: must be an absolute http(s) URL" in message


def test_openai_key_is_trimmed_and_checked_without_being_shown() -> None:
    text = BASE.replace("{kind: mock}", "{kind: mock}\n  o: {kind: openai, api_key: '${K}'}")
    config = parse_config(text, env={"K": "sk-abc123\n"})
    assert config.providers["o"].api_key == "sk-abc123"  # type: ignore[attr-defined]
    message = error_of(text, env={"K": "sk-abc 123"})
    assert "providers.o.api_key: contains whitespace or control characters" in message
    assert "sk-abc" not in message


def test_mtls_rules_without_client_certificates_are_refused() -> None:
    rules = "auth: {mtls: {rules: [{common_name: batch, tenant: ten_1, consumer: con_1}]}}\n"
    assert "auth.mtls.rules: need tls.client_ca_file" in error_of(BASE + rules)
    tls = "tls: {cert_file: s.pem, key_file: s.key, client_ca_file: ca.pem}\n"
    assert parse_config(BASE + rules + tls).auth.mtls.rules
