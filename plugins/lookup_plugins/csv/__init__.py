"""CSV backend: a customer file, looked up through a persistent SQLite index."""
