"""Connections to shared storage backends, used by the drivers of several blocks."""
