"""The embedded SQLite store: schema, codec, writer, outbox and reader."""
