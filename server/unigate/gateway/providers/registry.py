"""Every provider kind the gateway knows: adding a vendor adds one line here."""

from __future__ import annotations

from collections.abc import Mapping

from unigate.gateway.providers import (
    anthropic,
    azure_openai,
    gemini,
    mistral,
    mock,
    openai,
    openai_compatible,
)
from unigate.gateway.providers.base import ProviderKind

PROVIDER_KINDS: Mapping[str, ProviderKind] = {
    "anthropic": anthropic.KIND,
    "azure_openai": azure_openai.KIND,
    "gemini": gemini.KIND,
    "mistral": mistral.KIND,
    "mock": mock.KIND,
    "openai": openai.KIND,
    "openai_compatible": openai_compatible.KIND,
}
