"""lookup-server: HelpSpot Live Lookup, AJAX fields, Request Push and webhooks."""

__version__ = "0.1.0"
