"""Every provider kind the gateway knows: adding a vendor adds one line here."""

from __future__ import annotations

from collections.abc import Mapping

from unigate.gateway.providers import anthropic, gemini, mock, openai
from unigate.gateway.providers.base import ProviderKind

PROVIDER_KINDS: Mapping[str, ProviderKind] = {
    "anthropic": anthropic.KIND,
    "gemini": gemini.KIND,
    "mock": mock.KIND,
    "openai": openai.KIND,
}
