"""OpenAI Chat Completions (``POST .../chat/completions``), streamed (SSE) or not.

A turn becomes either text (``delta.content``) or one call of a tool from the request's
``tools`` list (``delta.tool_calls``); the usage comes in the last chunk, as OpenAI sends
it with ``stream_options.include_usage``. A request without tools is a side request (a
title) answered with a short text, or the conversation of aider, which has no tools: see
:func:`toolless_answer`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.conformance.modelserver import (
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    SIDE_ANSWER,
    STREAM,
    Protocol,
    Reply,
    Request,
    Script,
    mcp_tool,
    sse,
)

SHELL_TOOLS = ("bash", "shell", "run_shell_command", "exec_command", "terminal")
COMMAND_FIELDS = ("command", "cmd", "script")
MODEL = "scripted"
# System prompts of the requests that are not the agent's conversation.
COMMIT_REQUEST = re.compile(r"commit message", re.IGNORECASE)
SIDE_REQUEST = re.compile(r"\btitle\b|summari[sz]e", re.IGNORECASE)


class ChatProtocol(Protocol):
    name = "chat"

    def matches(self, request: Request) -> bool:
        return request.path.endswith("/chat/completions")

    def answer(self, request: Request, script: Script) -> Reply:
        body = request.json if isinstance(request.json, dict) else {}
        tools = tools_of(body)
        if not tools:
            message: dict[str, Any] = {"role": "assistant",
                                       "content": toolless_answer(request, body, script)}
        else:
            message = assistant_message(script.turn(request.text, tool_results(body)), tools)
        if body.get("stream"):
            return Reply.sse(stream_of(message))
        return Reply.json(completion(message))


def toolless_answer(request: Request, body: dict[str, Any], script: Script) -> str:
    """A request without tools: a side request (told by its system prompt: a title, a
    summary, a commit message) or the conversation of a CLI that edits through blocks in
    the model's text (aider), whose turn is chosen by its replies since the stream's
    prompt. A commit-message request is answered with the first turn's ``commit`` when
    there is one and the request names the stream (a later commit's may not).
    """
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    system = "\n".join(content_text(m) for m in messages if m.get("role") == "system")
    if COMMIT_REQUEST.search(system):
        commits = [i for i, t in enumerate(script.turns) if "commit" in t]
        message = str(script.turn(request.text, commits[0])["commit"]) if commits else ""
        return message if message and "{" not in message else SIDE_ANSWER
    if SIDE_REQUEST.search(system):
        return SIDE_ANSWER
    return str(script.turn(request.text, replies_since_task(messages)).get("text", SIDE_ANSWER))


def replies_since_task(messages: list[dict[str, Any]]) -> int:
    """The assistant replies after the stream's prompt (aider puts example exchanges and
    its own acknowledgements before it)."""
    task = next((i for i, m in enumerate(messages)
                 if m.get("role") == "user" and STREAM.search(content_text(m))), -1)
    return sum(1 for m in messages[task + 1:] if m.get("role") == "assistant")


def content_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def tools_of(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The request's tools by name, each with its JSON-schema ``parameters``."""
    found = {}
    for tool in body.get("tools") or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            found[function["name"]] = function.get("parameters") or {}
    return found


def tool_results(body: dict[str, Any]) -> int:
    return sum(1 for m in body.get("messages") or []
               if isinstance(m, dict) and m.get("role") == "tool")


def assistant_message(turn: dict[str, Any], tools: dict[str, dict[str, Any]]
                      ) -> dict[str, Any]:
    if "shell" in turn:
        name = next((n for n in SHELL_TOOLS if n in tools), None)
        if name is None:
            raise ValueError(f"no shell tool among {sorted(tools)}")
        call = (name, shell_arguments(turn["shell"], tools[name]))
    elif "tool" in turn:
        call = (turn["tool"], turn.get("input") or {})
    elif "mcp" in turn:
        call = (mcp_tool(list(tools), turn["mcp"], f"wtr_{turn['mcp']}"), turn.get("input") or {})
    else:
        return {"role": "assistant", "content": turn.get("text", "Done.")}
    return {"role": "assistant", "content": None, "tool_calls": [{
        "id": f"call_{abs(hash(json.dumps(call))) % 10**8}", "type": "function",
        "function": {"name": call[0], "arguments": json.dumps(call[1])}}]}


def shell_arguments(command: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The shell tool's arguments: the command, and a short filler for any other
    required text field (opencode's ``description``)."""
    properties = schema.get("properties") or {}
    field = next((f for f in COMMAND_FIELDS if f in properties), "command")
    is_list = (properties.get(field) or {}).get("type") == "array"
    arguments: dict[str, Any] = {field: ["bash", "-lc", command] if is_list else command}
    for name in schema.get("required") or []:
        if name not in arguments and (properties.get(name) or {}).get("type") == "string":
            arguments[name] = "scripted step"
    return arguments


def usage() -> dict[str, int]:
    return {"prompt_tokens": INPUT_TOKENS, "completion_tokens": OUTPUT_TOKENS,
            "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS}


def finish_reason(message: dict[str, Any]) -> str:
    return "tool_calls" if message.get("tool_calls") else "stop"


def completion(message: dict[str, Any]) -> dict[str, Any]:
    return {"id": "chatcmpl-scripted", "object": "chat.completion", "created": 0,
            "model": MODEL, "usage": usage(), "choices": [
                {"index": 0, "message": message, "finish_reason": finish_reason(message)}]}


def stream_of(message: dict[str, Any]) -> list[bytes]:
    """The chunks: role, content or tool call, finish, usage, ``[DONE]``."""
    delta: dict[str, Any] = {"role": "assistant"}
    if message.get("tool_calls"):
        delta["tool_calls"] = [dict(call, index=i)
                               for i, call in enumerate(message["tool_calls"])]
    else:
        delta["content"] = message.get("content") or ""
    return [sse(chunk(delta, None)), sse(chunk({}, finish_reason(message))),
            sse(chunk(None, None) | {"choices": [], "usage": usage()}), sse("[DONE]")]


def chunk(delta: dict[str, Any] | None, finish: str | None) -> dict[str, Any]:
    choices = [] if delta is None else [
        {"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 0,
            "model": MODEL, "choices": choices}


PROTOCOL = ChatProtocol()
