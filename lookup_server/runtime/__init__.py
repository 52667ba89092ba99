"""Configured sources and targets at work, one code path for HTTP and CLI, and ``check``."""
