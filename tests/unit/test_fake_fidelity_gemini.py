"""FakeGemini speaks the Gemini API's wire format: the official `google-genai` SDK, pointed at it
(http_options base_url + api_version, retries off), parses every answer it sends into its typed
models and raises its typed errors from error answers. The SDK also shows that the request
bodies the adapter builds use the API's own field names: for the same request, both send the
same JSON."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from google import genai
from google.genai import errors, types
from google.protobuf import json_format

from tests.fakes.gemini_server import FakeGemini, Fault, canonical_fields
from tests.fakes.openai_server import fake_vector
from unigate.gateway.providers import gemini_translate as tr
from unigate.v1 import inference_pb2 as pb

KEY = "AIzaSyFIDELITY0123456789abcdefghijklm"
MODEL = "gemini-2.5-flash"
# The SDK's own aiohttp session subclass warns on import; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class:DeprecationWarning")
PARAMETERS = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
LOOKUP = types.Tool(
    function_declarations=[
        types.FunctionDeclaration(
            name="lookup", description="Look something up.", parameters_json_schema=PARAMETERS
        )
    ]
)
FORCED = types.GenerateContentConfig(
    tools=[LOOKUP],
    tool_config=types.ToolConfig(
        function_calling_config=types.FunctionCallingConfig(
            mode=types.FunctionCallingConfigMode.ANY
        )
    ),
    automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    async with FakeGemini(api_key=KEY) as server:
        yield server


@pytest.fixture
async def client(fake: FakeGemini) -> AsyncIterator[genai.client.AsyncClient]:
    options = types.HttpOptions(
        base_url=fake.base_url,
        api_version="v1beta",
        retry_options=types.HttpRetryOptions(attempts=1),
    )
    sdk = genai.Client(api_key=KEY, http_options=options).aio
    yield sdk
    await sdk.aclose()


async def test_generate_content(client: genai.client.AsyncClient, fake: FakeGemini) -> None:
    response = await client.models.generate_content(model=MODEL, contents="hello there")
    assert response.text == "echo: hello there"
    assert response.candidates and response.candidates[0].finish_reason == types.FinishReason.STOP
    usage = response.usage_metadata
    assert usage and (usage.prompt_token_count, usage.candidates_token_count) == (2, 3)
    assert response.model_version == MODEL
    assert response.response_id
    [sent] = fake.requests
    assert sent.path == f"/v1beta/models/{MODEL}:generateContent"
    assert sent.headers["x-goog-api-key"] == KEY


async def test_stream(client: genai.client.AsyncClient, fake: FakeGemini) -> None:
    stream = await client.models.generate_content_stream(model=MODEL, contents="one two")
    chunks = [chunk async for chunk in stream]
    assert "".join(chunk.text or "" for chunk in chunks) == "echo: one two"
    last = chunks[-1]
    assert last.candidates and last.candidates[0].finish_reason == types.FinishReason.STOP
    assert last.usage_metadata and last.usage_metadata.total_token_count == 5
    assert fake.requests[0].path.endswith(":streamGenerateContent?alt=sse")


async def test_function_call_round_trip_with_its_signature(
    client: genai.client.AsyncClient, fake: FakeGemini
) -> None:
    fake.require_thought_signatures = True
    question = types.Content(role="user", parts=[types.Part(text="Paris")])
    response = await client.models.generate_content(model=MODEL, contents=[question], config=FORCED)
    [call] = response.function_calls or []
    assert (call.name, call.args) == ("lookup", {"text": "Paris"})
    assert response.candidates and response.candidates[0].content
    turn = response.candidates[0].content
    assert turn.parts and turn.parts[0].thought_signature  # base64 the SDK could decode
    result = types.Part.from_function_response(name="lookup", response={"found": True})
    answer = await client.models.generate_content(
        model=MODEL,
        contents=[question, turn, types.Content(role="user", parts=[result])],
        config=types.GenerateContentConfig(tools=[LOOKUP]),
    )
    assert answer.text == 'echo: {"found":true}'


async def test_streamed_function_call(client: genai.client.AsyncClient) -> None:
    stream = await client.models.generate_content_stream(
        model=MODEL, contents="Lyon", config=FORCED
    )
    calls = [call async for chunk in stream for call in chunk.function_calls or []]
    assert [(call.name, call.args) for call in calls] == [("lookup", {"text": "Lyon"})]


@pytest.mark.parametrize(
    ("text", "check"),
    [
        ("[blocked]", lambda r: r.prompt_feedback.block_reason == types.BlockedReason.SAFETY),
        ("[unsafe]", lambda r: r.candidates[0].finish_reason == types.FinishReason.SAFETY),
    ],
)
async def test_safety_answers(client: genai.client.AsyncClient, text: str, check: Any) -> None:
    response = await client.models.generate_content(model=MODEL, contents=text)
    assert check(response)
    assert response.text is None


async def test_embeddings(client: genai.client.AsyncClient, fake: FakeGemini) -> None:
    texts = ["a", "bbb"]
    config = types.EmbedContentConfig(output_dimensionality=4)
    response = await client.models.embed_content(
        model="gemini-embedding-001", contents=texts, config=config
    )
    assert [e.values for e in response.embeddings or []] == [
        fake_vector(text, index, 4) for index, text in enumerate(texts)
    ]
    assert fake.requests[0].path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"


@pytest.mark.parametrize(
    ("fault", "kind", "code", "status"),
    [
        (Fault.rate_limited(retry_delay="7s"), errors.ClientError, 429, "RESOURCE_EXHAUSTED"),
        (Fault.invalid_api_key(), errors.ClientError, 400, "INVALID_ARGUMENT"),
        (Fault.model_not_found(MODEL), errors.ClientError, 404, "NOT_FOUND"),
        (Fault.overloaded(), errors.ServerError, 503, "UNAVAILABLE"),
    ],
)
async def test_errors(
    client: genai.client.AsyncClient,
    fake: FakeGemini,
    fault: Fault,
    kind: type[errors.APIError],
    code: int,
    status: str,
) -> None:
    fake.fail_next(fault)
    with pytest.raises(kind) as caught:
        await client.models.generate_content(model=MODEL, contents="hi")
    assert (caught.value.code, caught.value.status) == (code, status)
    assert caught.value.message == fault.body["error"]["message"]


async def test_in_stream_error(client: genai.client.AsyncClient, fake: FakeGemini) -> None:
    fake.error_after = 1
    stream = await client.models.generate_content_stream(model=MODEL, contents="a b c")
    texts: list[str] = []
    with pytest.raises(errors.ServerError) as caught:
        async for chunk in stream:
            texts.append(chunk.text or "")
    assert (texts, caught.value.code, caught.value.status) == (["echo:"], 503, "UNAVAILABLE")


async def test_the_adapter_sends_what_the_sdk_sends(
    client: genai.client.AsyncClient, fake: FakeGemini
) -> None:
    config = types.GenerateContentConfig(
        system_instruction="Be brief.",
        temperature=0.5,
        top_p=0.9,
        max_output_tokens=64,
        stop_sequences=["END"],
        seed=7,
        presence_penalty=0.25,
        frequency_penalty=-0.5,
        candidate_count=1,
        response_mime_type="application/json",
        response_json_schema={"type": "object"},
        tools=[LOOKUP],
        tool_config=types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(
                mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=["lookup"]
            )
        ),
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    question = types.Content(role="user", parts=[types.Part(text="hi")])
    await client.models.generate_content(model=MODEL, contents=[question], config=config)
    request = json_format.ParseDict(
        {
            "messages": [
                {"role": "ROLE_SYSTEM", "content": [{"text": "Be brief."}]},
                {"role": "ROLE_USER", "content": [{"text": "hi"}]},
            ],
            "sampling": {
                "temperature": 0.5,
                "topP": 0.9,
                "maxTokens": 64,
                "stopSequences": ["END"],
                "seed": 7,
                "presencePenalty": 0.25,
                "frequencyPenalty": -0.5,
            },
            "tools": [
                {"name": "lookup", "description": "Look something up.", "parameters": PARAMETERS}
            ],
            "toolChoice": {"functionName": "lookup"},
            "responseFormat": {
                "type": "RESPONSE_FORMAT_TYPE_JSON_SCHEMA",
                "jsonSchema": {"schema": {"type": "object"}},
            },
        },
        pb.ChatRequest(),
    )
    # Proto JSON takes both spellings of a field name, and the SDK mixes them.
    sdk_body = canonical_fields(fake.requests[0].body)
    # The SDK gives the system instruction a "user" role that the API ignores.
    assert sdk_body["systemInstruction"].pop("role", "user") == "user"
    assert canonical_fields(tr.chat_request_body(request)) == sdk_body


async def test_the_fake_refuses_fields_gemini_does_not_know(
    client: genai.client.AsyncClient,
) -> None:
    # What makes "the fake accepts our request" mean something.
    extra = types.HttpOptions(extra_body={"generationConfig": {"topKk": 3}})
    config = types.GenerateContentConfig(http_options=extra)
    with pytest.raises(errors.ClientError) as caught:
        await client.models.generate_content(model=MODEL, contents="hi", config=config)
    assert caught.value.code == 400
    assert 'Unknown name "topKk"' in (caught.value.message or "")
