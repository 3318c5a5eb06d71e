"""An MCP server exposing the sidecar's memory as tools (stdio and streamable HTTP)."""
