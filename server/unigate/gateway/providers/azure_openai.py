"""The Azure OpenAI adapter: OpenAI's wire format at Azure's URLs, with Azure's credentials.

    api_style "deployments" (the default; the deployment is the unigate deployment's `model`):
        {base_url}/openai/deployments/{deployment}/chat/completions?api-version=2024-10-21
    api_style "v1" (Azure's newer API: the model name goes in the body, no dated version):
        {base_url}/openai/v1/chat/completions

Completions and embeddings follow the same pattern. The key goes in the `api-key` header; a
Microsoft Entra ID token (`bearer_token`) goes in `Authorization: Bearer` instead. Translation
is the OpenAI adapter's: Azure's content filter ends an answer with finish_reason
"content_filter" (CONTENT_FILTER), and a prompt it refuses is a 400 with code "content_filter"
(INVALID_ARGUMENT, Azure's message kept).
"""

from __future__ import annotations

from typing import ClassVar, Literal
from urllib.parse import quote, urlencode

from pydantic import Field, field_validator, model_validator

from unigate.gateway.providers.base import (
    HttpProviderSettings,
    ProviderKind,
    UpstreamCall,
    clean_secret,
)
from unigate.gateway.providers.openai import (
    EmbeddingEncoding,
    MaxTokensField,
    OpenAIProvider,
    OpenAISettings,
)
from unigate.gateway.providers.transport import HttpTransport

# The latest generally available dated version of Azure OpenAI's inference API.
DEFAULT_API_VERSION = "2024-10-21"


class AzureOpenAISettings(HttpProviderSettings):
    """A provider block of kind "azure_openai"."""

    kind: Literal["azure_openai"]
    # The resource endpoint, e.g. https://my-resource.openai.azure.com (without /openai).
    base_url: str
    # A Microsoft Entra ID access token, sent as `Authorization: Bearer`, instead of api_key.
    bearer_token: str | None = Field(default=None, repr=False)
    api_style: Literal["deployments", "v1"] = "deployments"
    # Deployments: the dated api-version (default DEFAULT_API_VERSION). v1: none is sent
    # unless set (e.g. "preview").
    api_version: str | None = None
    embedding_encoding: EmbeddingEncoding = "float"
    max_tokens_field: MaxTokensField = "max_tokens"
    # api-versions before 2024-09-01-preview refuse stream_options.include_usage.
    stream_usage: bool = True

    @field_validator("bearer_token")
    @classmethod
    def _clean_token(cls, value: str | None) -> str | None:
        return clean_secret(value)

    @model_validator(mode="after")
    def _one_credential(self) -> AzureOpenAISettings:
        if self.api_key and self.bearer_token:
            raise ValueError("set api_key or bearer_token, not both")
        return self


def deployment_url(settings: AzureOpenAISettings, path: str, deployment: str) -> str:
    """The URL of an endpoint (`/chat/completions`...) of one Azure deployment."""
    if settings.api_style == "v1":
        url, version = f"{settings.base_url}/openai/v1{path}", settings.api_version
    else:
        name = quote(deployment, safe="")
        url = f"{settings.base_url}/openai/deployments/{name}{path}"
        version = settings.api_version or DEFAULT_API_VERSION
    return f"{url}?{urlencode({'api-version': version})}" if version else url


class AzureOpenAIProvider(OpenAIProvider):
    """One Azure OpenAI resource; each unigate deployment's `model` names an Azure deployment."""

    kind: ClassVar[str] = "azure_openai"

    def __init__(self, name: str, settings: AzureOpenAISettings, transport: HttpTransport) -> None:
        credentials: dict[str, str] = {}
        if settings.api_key:
            credentials["api-key"] = settings.api_key
        if settings.bearer_token:
            credentials["Authorization"] = f"Bearer {settings.bearer_token}"
        # The same wire format as OpenAI's: the OpenAI adapter, from the equivalent block.
        # Credential headers are secrets there (the bearer token too), kept out of every error.
        wire = OpenAISettings(
            kind="openai",
            base_url=settings.base_url,
            headers={**credentials, **settings.headers},
            embedding_encoding=settings.embedding_encoding,
            max_tokens_field=settings.max_tokens_field,
        )
        super().__init__(name, wire, transport)
        self._azure = settings
        self._stream_usage = settings.stream_usage
        # Built once per (endpoint, deployment): both come from the config, so it stays small.
        self._urls: dict[tuple[str, str], str] = {}

    def _url(self, path: str, call: UpstreamCall) -> str:
        url = self._urls.get((path, call.model))
        if url is None:
            url = self._urls[(path, call.model)] = deployment_url(self._azure, path, call.model)
        return url


KIND = ProviderKind(settings=AzureOpenAISettings, factory=AzureOpenAIProvider)
