"""What FakeGemini answers (its module docstring says how): generateContent's chunks, which a
unary call gets merged into one, and embeddings."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from tests.fakes.base import Json, body_digest, compact_json, fake_vector, streamed_words

_RATINGS = [
    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
]


def _prompt(body: Json) -> str:
    """The text of the last user turn, or its last function response as compact JSON."""
    parts = body["contents"][-1]["parts"]
    texts = [part["text"] for part in parts if "text" in part]
    if texts:
        return " ".join(texts)
    responses = [
        part["functionResponse"]["response"] for part in parts if "functionResponse" in part
    ]
    return compact_json(responses[-1]) if responses else ""


def answer(body: Json, model: str) -> list[Json]:
    """The stream of chunks that answers a generateContent request (unary merges them)."""
    prompt = _prompt(body)
    contents = [*body["contents"], body.get("systemInstruction") or {"parts": []}]
    prompt_tokens = sum(len(p.get("text", "").split()) for c in contents for p in c["parts"])
    head = {"modelVersion": model, "responseId": _ident(body)}
    if "[blocked]" in prompt:
        feedback = {"blockReason": "SAFETY", "safetyRatings": _RATINGS}
        usage = {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens}
        return [{"promptFeedback": feedback, "usageMetadata": usage, **head}]
    calling = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    if calling.get("mode") == "ANY" and body.get("tools"):
        declared = body["tools"][0]["functionDeclarations"][0]["name"]
        name = (calling.get("allowedFunctionNames") or [declared])[0]
        signature = base64.b64encode(hashlib.sha256(prompt.encode()).digest()).decode()
        call = {"functionCall": {"name": name, "args": {"text": prompt}}}
        part = {**call, "thoughtSignature": signature}
        return [_chunk(head, [part], "STOP", _usage(prompt_tokens, 5, thoughts=12))]
    config = body.get("generationConfig") or {}
    if config.get("responseMimeType") == "application/json":
        text = json.dumps({"echo": prompt})
    else:
        text = "echo: " + prompt
    words, finish = text.split(" "), "STOP"
    if "maxOutputTokens" in config and len(words) > config["maxOutputTokens"]:
        words, finish = words[: config["maxOutputTokens"]], "MAX_TOKENS"
    pieces = streamed_words(words)
    if "[unsafe]" in prompt:
        pieces, finish = pieces[:1], "SAFETY"
    running = {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens}
    chunks = [_chunk(head, [{"text": piece}], None, running) for piece in pieces]
    last = _usage(prompt_tokens, len(pieces))
    if finish == "SAFETY":
        # The filtered candidate comes without content, with the ratings that stopped it.
        stopped = {"finishReason": "SAFETY", "index": 0, "safetyRatings": _RATINGS}
        return [*chunks, {"candidates": [stopped], "usageMetadata": last, **head}]
    chunks[-1] = _chunk(head, [{"text": pieces[-1]}], finish, last)
    return chunks


def _chunk(head: Json, parts: list[Json], finish: str | None, usage: Json) -> Json:
    candidate: Json = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "usageMetadata": usage, **head}


def merge(chunks: list[Json]) -> Json:
    """The unary answer: the stream's chunks as one (a filtered answer withholds its text)."""
    answer = dict(chunks[-1])
    candidate = (answer.get("candidates") or [{}])[0]
    if len(chunks) > 1 and "content" in candidate:
        text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
        content = {"parts": [{"text": text}], "role": "model"}
        answer["candidates"] = [{**candidate, "content": content}]
    return answer


def _usage(prompt: int, candidates: int, *, thoughts: int = 0) -> Json:
    usage: Json = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates + thoughts,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    }
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return usage


def vector(item: Json, index: int) -> list[float]:
    text = " ".join(part.get("text", "") for part in item["content"]["parts"])
    return fake_vector(text, index, item.get("outputDimensionality", 8))


def _ident(body: Any) -> str:
    digest = bytes.fromhex(body_digest(body))
    return base64.urlsafe_b64encode(digest).decode()[:23]
