"""The embedded demo: a configuration and a sample customer CSV."""
