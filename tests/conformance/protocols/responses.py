"""OpenAI Responses API (``POST /v1/responses``, SSE), as the Codex CLI speaks it.

A tool call is a ``function_call`` output item (or ``custom_tool_call`` for a freeform
tool); a tool result comes back as a ``*_call_output`` input item, which is what the turn
counter counts. The shell tool is whichever of codex's shell tools the request offers, its
arguments shaped after that tool's parameters. Codex 0.171.0 with a provider of the user's
(``wire_api = "responses"``) sends nothing else: no model list, no token count, and
requests over plain HTTP (no WebSocket, which it tries only for its built-in provider).
"""

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

MODEL = "scripted-model"
# Codex's shell tools, most specific first: the first one the request offers is used.
SHELL_TOOLS = ("shell_command", "exec_command", "shell", "local_shell", "container.exec")
RESULT_TYPES = ("function_call_output", "custom_tool_call_output", "local_shell_call_output",
                "tool_search_output", "mcp_tool_call_output")
_ids = itertools.count(1)


class ResponsesProtocol(Protocol):
    name = "responses"

    def matches(self, request: Request) -> bool:
        return request.method == "POST" and request.path.rstrip("/").endswith("/responses")

    def answer(self, request: Request, script: Script) -> Reply:
        body = request.json if isinstance(request.json, dict) else {}
        tools = _tools(body)
        if not tools:
            items = [message_item(SIDE_ANSWER)]
        else:
            turn = script.turn(request.text, tool_results(body))
            items = [output_item(turn, tools)]
        return Reply.sse(stream(body, items))


def _tools(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The offered tools by name; a tool of a namespace (codex puts an MCP server's tools
    in one, ``mcp__wtr``) as ``<namespace>__<tool>``."""
    found = {}
    for tool in body.get("tools") or ():
        if isinstance(tool, dict):
            name = tool.get("name") or tool.get("type")
            if isinstance(name, str):
                found[name] = tool
            for inner in tool.get("tools") or () if tool.get("type") == "namespace" else ():
                if isinstance(inner, dict) and isinstance(inner.get("name"), str):
                    found[f"{name}__{inner['name']}"] = {**inner, "namespace": name}
    return found


def tool_results(body: dict[str, Any]) -> int:
    items = body.get("input")
    if not isinstance(items, list):
        return 0
    return sum(1 for item in items if isinstance(item, dict) and item.get("type") in RESULT_TYPES)


def output_item(turn: dict[str, Any], tools: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if "shell" in turn:
        name = next((n for n in SHELL_TOOLS if n in tools), None)
        if name is None:
            raise LookupError(f"no shell tool among {sorted(tools)}")
        return call_item(name, shell_input(tools[name], turn["shell"]), tools[name])
    if "tool" in turn:
        return call_item(turn["tool"], turn.get("input") or {}, tools.get(turn["tool"], {}))
    if "mcp" in turn:
        name = mcp_tool(list(tools), turn["mcp"], f"mcp__wtr__{turn['mcp']}")
        return call_item(name, turn.get("input") or {}, tools.get(name, {}))
    return message_item(str(turn.get("text", "Done.")))


def shell_input(tool: dict[str, Any], command: str) -> dict[str, Any]:
    """Arguments for codex's shell tool: a string ``command``/``cmd`` or an argv array."""
    params = (tool.get("parameters") or {}).get("properties") or {}
    if "cmd" in params:
        return {"cmd": command}
    if (params.get("command") or {}).get("type") == "array":
        return {"command": ["bash", "-lc", command]}
    return {"command": command}


def call_item(name: str, arguments: dict[str, Any] | str, tool: dict[str, Any]) -> dict[str, Any]:
    n = next(_ids)
    if tool.get("type") == "custom":
        text = arguments if isinstance(arguments, str) else str(arguments.get("input", ""))
        return {"type": "custom_tool_call", "id": f"ctc_{n}", "call_id": f"call_{n}",
                "name": name, "input": text, "status": "completed"}
    named = ({"namespace": tool["namespace"], "name": tool["name"]} if "namespace" in tool
             else {"name": name})
    return {"type": "function_call", "id": f"fc_{n}", "call_id": f"call_{n}", **named,
            "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
            "status": "completed"}


def message_item(text: str) -> dict[str, Any]:
    return {"type": "message", "id": f"msg_{next(_ids)}", "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def stream(body: dict[str, Any], items: list[dict[str, Any]]) -> list[bytes]:
    response_id = f"resp_{next(_ids)}"
    head = {"id": response_id, "object": "response", "created_at": 0, "status": "in_progress",
            "model": body.get("model") or MODEL, "output": []}
    events = [sse({"type": "response.created", "response": head}, "response.created")]
    for index, item in enumerate(items):
        events += item_events(index, item)
    done = {**head, "status": "completed", "output": items, "usage": usage()}
    events.append(sse({"type": "response.completed", "response": done}, "response.completed"))
    return events


def item_events(index: int, item: dict[str, Any]) -> list[bytes]:
    events = [sse({"type": "response.output_item.added", "output_index": index,
                   "item": {**item, "status": "in_progress"}}, "response.output_item.added")]
    if item["type"] == "message":
        text = item["content"][0]["text"]
        events.append(sse({"type": "response.output_text.delta", "item_id": item["id"],
                           "output_index": index, "content_index": 0, "delta": text},
                          "response.output_text.delta"))
    events.append(sse({"type": "response.output_item.done", "output_index": index,
                       "item": item}, "response.output_item.done"))
    return events


def usage() -> dict[str, Any]:
    return {"input_tokens": INPUT_TOKENS, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": OUTPUT_TOKENS, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS}


PROTOCOL = ResponsesProtocol()
