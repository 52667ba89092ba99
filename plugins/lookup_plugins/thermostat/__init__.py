"""Thermostat (thermostat.io) surveys: a target that sends them, a source that shows them."""
