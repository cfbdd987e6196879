"""Port implementations. Cloud adapters import their SDK lazily, so importing this is free."""
