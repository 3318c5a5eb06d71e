"""Memory for agent frameworks, backed by the sidecar.

Each integration is an optional extra (`pip install 'memsidecar[langgraph]'`, `[mcp]`,
`[langchain]`, `[llamaindex]`) and is imported only by name: `import memsidecar`
and `import memsidecar.client` never import a framework.
"""
