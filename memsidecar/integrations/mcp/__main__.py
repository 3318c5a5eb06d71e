"""`python -m memsidecar.integrations.mcp`: the same server as `memsidecar mcp`."""

from memsidecar.integrations.mcp.server import command

if __name__ == "__main__":
    command(prog_name="python -m memsidecar.integrations.mcp")
