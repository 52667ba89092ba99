"""Mirrors: ldap and odbc sources that answer from a local copy of what their searches return."""
