"""``wtr mcp``: the MCP server (stdio) an agent of a run talks to (docs/agents.md).

The server serves one stream, the one its environment names (``WTR_STATE_DIR``,
``WTR_STREAM``...: what the runner gives every agent). ``binding`` finds that stream,
``tools`` does what each tool does (the same code as ``wtr progress``, ``WTR_REPORT``,
``wtr lock`` and the ownership check), ``server`` speaks the protocol with the official
SDK, which is imported only there.
"""
