"""Anthropic Messages: ``POST /v1/messages`` (SSE when ``stream`` is true, else one JSON
message) and ``POST /v1/messages/count_tokens``; what Claude Code speaks."""

from __future__ import annotations

import itertools
import json
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

_ids = itertools.count(1)


class AnthropicMessages(Protocol):
    name = "anthropic"

    def matches(self, request: Request) -> bool:
        return request.method == "POST" and request.path.startswith("/v1/messages")

    def answer(self, request: Request, script: Script) -> Reply:
        body = request.json if isinstance(request.json, dict) else {}
        if request.path.endswith("/count_tokens"):
            return Reply.json({"input_tokens": INPUT_TOKENS})
        tools = body.get("tools") or []
        if not tools:
            blocks = [{"type": "text", "text": SIDE_ANSWER}]
        else:
            turn = script.turn(request.text, tool_results(body.get("messages") or []))
            blocks = [content_block(turn, tools)]
        message = _message(body.get("model") or "claude-test", blocks)
        return _stream(message) if body.get("stream") else Reply.json(message)


def tool_results(messages: list[Any]) -> int:
    """How many ``tool_result`` blocks the conversation carries."""
    return sum(1 for message in messages if isinstance(message, dict)
               for block in _blocks(message) if block.get("type") == "tool_result")


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def content_block(turn: dict[str, Any], tools: list[Any]) -> dict[str, Any]:
    if "shell" in turn:
        name = shell_tool(tools)
        return _tool_use(name, {"command": turn["shell"], "description": "scripted command"})
    if "tool" in turn:
        return _tool_use(turn["tool"], turn.get("input") or {})
    if "mcp" in turn:
        names = [str(t.get("name", "")) for t in tools if isinstance(t, dict)]
        return _tool_use(mcp_tool(names, turn["mcp"], f"mcp__wtr__{turn['mcp']}"),
                         turn.get("input") or {})
    return {"type": "text", "text": turn.get("text", "Done.")}


def shell_tool(tools: list[Any]) -> str:
    """The request's shell tool: ``Bash`` in Claude Code, else any taking a ``command``."""
    names = [t.get("name", "") for t in tools if isinstance(t, dict)]
    if "Bash" in names:
        return "Bash"
    for tool in tools:
        schema = tool.get("input_schema") if isinstance(tool, dict) else None
        if isinstance(schema, dict) and "command" in (schema.get("properties") or {}):
            return str(tool.get("name"))
    raise ValueError(f"no shell tool among {names}")


def _tool_use(name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": f"toolu_{next(_ids):06d}", "name": name,
            "input": tool_input}


def _message(model: str, blocks: list[dict[str, Any]]) -> dict[str, Any]:
    stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
    return {"id": f"msg_{next(_ids):06d}", "type": "message", "role": "assistant",
            "model": model, "content": blocks, "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}


def _stream(message: dict[str, Any]) -> Reply:
    start = dict(message, content=[], stop_reason=None,
                 usage=dict(message["usage"], output_tokens=1))
    events = [sse({"type": "message_start", "message": start}, "message_start")]
    for index, block in enumerate(message["content"]):
        events += _block_events(index, block)
    events += [
        sse({"type": "message_delta",
             "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
             "usage": {"output_tokens": OUTPUT_TOKENS}}, "message_delta"),
        sse({"type": "message_stop"}, "message_stop"),
    ]
    return Reply.sse(events)


def _block_events(index: int, block: dict[str, Any]) -> list[bytes]:
    if block["type"] == "tool_use":
        opening = dict(block, input={})
        delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
    else:
        opening = {"type": "text", "text": ""}
        delta = {"type": "text_delta", "text": block["text"]}
    return [
        sse({"type": "content_block_start", "index": index, "content_block": opening},
            "content_block_start"),
        sse({"type": "content_block_delta", "index": index, "delta": delta},
            "content_block_delta"),
        sse({"type": "content_block_stop", "index": index}, "content_block_stop"),
    ]


PROTOCOL = AnthropicMessages()
