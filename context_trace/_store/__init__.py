"""The embedded SQLite store, one module per concept (see ARCHITECTURE.md)."""
