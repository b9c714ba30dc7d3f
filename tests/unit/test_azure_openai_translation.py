"""Azure OpenAI translation, driven by golden files in tests/testdata/azure_openai/<case>/, from
Azure's own answers (prompt filter chunks, content filter results and refusals, Azure's error
bodies). The translation is the OpenAI adapter's; case.json also names the URL the call goes to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from tests.golden import assert_golden, load_json
from tests.unit.test_openai_compatible_translation import wire_answer, wire_body
from tests.unit.test_openai_translation import REQUEST_TYPES, recorded_answer
from unigate.gateway.providers.azure_openai import AzureOpenAISettings, deployment_url
from unigate.gateway.providers.transport import Target

CASES_DIR = Path(__file__).parent.parent / "testdata" / "azure_openai"
CASES = sorted(path.parent for path in CASES_DIR.glob("*/case.json"))
ENDPOINT = "https://unigate-test.openai.azure.com"
PATHS = {
    "chat": "/chat/completions",
    "stream_chat": "/chat/completions",
    "complete": "/completions",
    "stream_complete": "/completions",
    "embed": "/embeddings",
}


@pytest.mark.parametrize("case_dir", CASES, ids=[case.name for case in CASES])
async def test_golden_case(case_dir: Path) -> None:
    spec = load_json(case_dir / "case.json")
    settings = AzureOpenAISettings(
        kind="azure_openai", base_url=ENDPOINT, **spec.get("settings", {})
    )
    api_key = spec.get("api_key", "0123456789abcdef0123456789abcdef")
    target = Target(provider="azure", deployment="golden", secrets=(api_key,))
    if "url" in spec:
        assert deployment_url(settings, PATHS[spec["rpc"]], spec["model"]) == spec["url"]
    if (case_dir / "request.json").exists():
        body = wire_body(
            case_dir,
            spec,
            max_tokens_field=settings.max_tokens_field,
            embedding_encoding=settings.embedding_encoding,
            stream_usage=settings.stream_usage,
        )
        assert_golden(case_dir / "upstream_request.json", body)
    answer = recorded_answer(case_dir)
    actual = await wire_answer(answer, spec, target, provider="azure_openai", usage_optional=False)
    assert api_key not in orjson.dumps(actual).decode()
    assert_golden(case_dir / "response.json", actual)


def test_golden_cases_cover_every_rpc_and_error() -> None:
    specs = [load_json(case / "case.json") for case in CASES]
    assert set(REQUEST_TYPES) <= {spec["rpc"] for spec in specs}
    assert {400, 401, 404, 429, 500} <= {spec.get("status", 200) for spec in specs}


# --- URLs -------------------------------------------------------------------------------------


def settings(**fields: Any) -> AzureOpenAISettings:
    return AzureOpenAISettings(kind="azure_openai", base_url=ENDPOINT + "/", **fields)


def test_deployment_url_defaults_to_the_latest_ga_version() -> None:
    url = deployment_url(settings(), "/embeddings", "text-embedding-3-small")
    assert (
        url
        == f"{ENDPOINT}/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-10-21"
    )


def test_deployment_names_are_quoted_in_the_path() -> None:
    version = "2025-04-01-preview"
    url = deployment_url(settings(api_version=version), "/chat/completions", "a b/c")
    assert url == f"{ENDPOINT}/openai/deployments/a%20b%2Fc/chat/completions?api-version={version}"


def test_v1_api_sends_a_version_only_when_set() -> None:
    assert deployment_url(settings(api_style="v1"), "/completions", "m") == (
        f"{ENDPOINT}/openai/v1/completions"
    )
    preview = deployment_url(settings(api_style="v1", api_version="preview"), "/completions", "m")
    assert preview == f"{ENDPOINT}/openai/v1/completions?api-version=preview"


def test_a_proxy_path_prefix_is_kept() -> None:
    proxied = AzureOpenAISettings(kind="azure_openai", base_url="https://apim.example.com/aoai")
    assert deployment_url(proxied, "/embeddings", "e").startswith(
        "https://apim.example.com/aoai/openai/deployments/e/embeddings?"
    )


@pytest.mark.parametrize(
    "block",
    [
        {"kind": "azure_openai"},  # the endpoint is required
        {"kind": "azure_openai", "base_url": ENDPOINT, "api_key": "k", "bearer_token": "t"},
        {"kind": "azure_openai", "base_url": ENDPOINT, "bearer_token": "two words"},
        {"kind": "azure_openai", "base_url": ENDPOINT, "api_style": "v2"},
        {"kind": "azure_openai", "base_url": ENDPOINT, "organization": "org"},
    ],
)
def test_settings_are_strict(block: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        AzureOpenAISettings.model_validate(block)
