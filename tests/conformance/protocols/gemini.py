"""The Gemini API as Gemini CLI speaks it (``generativelanguage`` v1beta, API-key auth).

``POST /v1beta/models/<model>:streamGenerateContent?alt=sse`` carries the conversation
(``contents``, each part a ``text``, ``functionCall`` or ``functionResponse``) and the
tools (``tools[].functionDeclarations``); the answer is server-sent events, each a
``GenerateContentResponse`` with ``candidates[].content.parts`` and ``usageMetadata``.
Side requests answered here: ``:generateContent`` (JSON, for the CLI's routing and
next-speaker checks), ``:countTokens`` and the model listing.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.conformance.modelserver import (
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    SIDE_ANSWER,
    Protocol,
    Reply,
    Request,
    Script,
    mcp_tool,
    sse,
)

MODEL_PATH = re.compile(r"^/v1(?:beta|alpha)?/models/([^/:]+):(\w+)$")
SHELL_TOOL = "run_shell_command"


class GeminiProtocol(Protocol):
    name = "gemini"

    def matches(self, request: Request) -> bool:
        return bool(MODEL_PATH.match(request.path)) or request.path.rstrip("/") in (
            "/v1beta/models", "/v1/models")

    def answer(self, request: Request, script: Script) -> Reply:
        match = MODEL_PATH.match(request.path)
        if match is None:
            return Reply.json({"models": [model_entry("gemini-2.5-pro"),
                                          model_entry("gemini-2.5-flash")]})
        model, method = match.groups()
        body = request.json if isinstance(request.json, dict) else {}
        if method == "countTokens":
            return Reply.json({"totalTokens": INPUT_TOKENS})
        parts = self._parts(body, request, script)
        response = {"candidates": [{"content": {"role": "model", "parts": parts},
                                    "finishReason": "STOP", "index": 0}],
                    "usageMetadata": usage_metadata(), "modelVersion": model,
                    "responseId": "wtr-conformance"}
        if method == "streamGenerateContent":
            return Reply.sse([sse(response)])
        return Reply.json(response)

    def _parts(self, body: dict[str, Any], request: Request,
               script: Script) -> list[dict[str, Any]]:
        tools = tool_names(body)
        if not tools:
            return [{"text": side_answer(body)}]
        turn = script.turn(request.text, tool_results(body))
        return parts_for(turn, tools)


def model_entry(name: str) -> dict[str, Any]:
    return {"name": f"models/{name}", "displayName": name, "inputTokenLimit": 1048576,
            "outputTokenLimit": 65536,
            "supportedGenerationMethods": ["generateContent", "countTokens"]}


def usage_metadata() -> dict[str, int]:
    return {"promptTokenCount": INPUT_TOKENS, "candidatesTokenCount": OUTPUT_TOKENS,
            "totalTokenCount": INPUT_TOKENS + OUTPUT_TOKENS}


def tool_names(body: dict[str, Any]) -> list[str]:
    names = []
    for tool in body.get("tools") or []:
        for declaration in (tool or {}).get("functionDeclarations") or []:
            names.append(str(declaration.get("name", "")))
    return names


def tool_results(body: dict[str, Any]) -> int:
    return sum(1 for content in body.get("contents") or []
               for part in (content or {}).get("parts") or []
               if isinstance(part, dict) and "functionResponse" in part)


def side_answer(body: dict[str, Any]) -> str:
    """A side request (routing, next-speaker check) asking for JSON gets JSON of its schema:
    the simplest route, and the user speaks next."""
    config = body.get("generationConfig") or {}
    schema = config.get("responseJsonSchema") or config.get("responseSchema")
    if not isinstance(schema, dict):
        return SIDE_ANSWER
    return json.dumps(example_of(schema))


def example_of(schema: dict[str, Any], name: str = "") -> Any:
    kind = str(schema.get("type", "")).lower()
    if kind == "object":
        return {key: example_of(sub, key)
                for key, sub in (schema.get("properties") or {}).items()
                if isinstance(sub, dict)}
    if schema.get("enum"):
        choices = [str(c) for c in schema["enum"]]
        return next((c for c in ("user", "flash") if c in choices), choices[0])
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return False
    if kind == "array":
        return []
    return "user" if name == "next_speaker" else SIDE_ANSWER


def parts_for(turn: dict[str, Any], tools: list[str]) -> list[dict[str, Any]]:
    if "shell" in turn:
        shell = SHELL_TOOL if SHELL_TOOL in tools else next(
            (t for t in tools if "shell" in t), SHELL_TOOL)
        return [call(shell, {"command": turn["shell"]})]
    if "tool" in turn:
        return [call(turn["tool"], turn.get("input") or {})]
    if "mcp" in turn:
        return [call(mcp_tool(list(tools), turn["mcp"], f"mcp_wtr_{turn['mcp']}"),
                     turn.get("input") or {})]
    return [{"text": turn.get("text", "Done.")}]


def call(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"functionCall": {"name": name, "args": args}}


PROTOCOL = GeminiProtocol()
