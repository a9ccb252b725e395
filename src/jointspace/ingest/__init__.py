"""The bulk ingest run: corpus → backbone features → gated encoder → store."""
