"""Redaction of logged bodies: what looks like a secret or personal data is replaced
by a marker before a body reaches the call log.

Built in: e-mail addresses, payment card numbers (13 to 19 digits, spaces or dashes
between, Luhn-checked so order numbers survive), API keys of the common vendors
and of unigate itself, bearer tokens, and JWTs. `call_log.redact` adds patterns.
Redaction is best effort by nature: bodies stay off unless an alias opts in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MARK = "[REDACTED]"

_BUILT_IN = (
    # e-mail addresses
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    # API keys: unigate, OpenAI/Anthropic style, Google, AWS access key ids, GitHub, Slack
    r"\bug_[A-Za-z0-9]{12}_[A-Za-z0-9_-]{20,}",
    r"\bsk-[A-Za-z0-9_-]{16,}",
    r"\bAIza[0-9A-Za-z_-]{30,}",
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    r"\bgh[pousr]_[A-Za-z0-9]{30,}",
    r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
    # JWTs (three base64url parts, the first a JSON header)
    r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    # bearer tokens
    r"\b(?i:bearer)\s+[A-Za-z0-9._~+/-]{12,}=*",
)
_CARD = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", match.group(0))
    return MARK if _luhn(digits) else match.group(0)


class Redactor:
    def __init__(self, extra: Iterable[str] = ()) -> None:
        self._built_in = re.compile("|".join(f"(?:{p})" for p in _BUILT_IN))
        # The operator's patterns each on their own: they may carry flags like (?i).
        self._extra = [re.compile(p) for p in extra]

    def __call__(self, text: str) -> str:
        text = _CARD.sub(_card, self._built_in.sub(MARK, text))
        for pattern in self._extra:
            text = pattern.sub(MARK, text)
        return text
