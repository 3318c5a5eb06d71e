"""An MCP server exposing the sidecar's memory as tools (stdio and streamable HTTP).

Run it with `memsidecar mcp` or `python -m memsidecar.integrations.mcp`; build one in
code with `memsidecar.integrations.mcp.server.build_server`. This package itself does
not import `mcp`, so naming it costs nothing until the server is used.
"""
