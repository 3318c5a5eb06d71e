"""LangGraph on the sidecar: a `BaseStore` (`.store`) and a checkpointer (`.checkpoint`)."""
