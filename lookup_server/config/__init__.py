"""The configuration: the TOML file, loaded and validated against typed tables."""
