"""GitHub (and GitHub Enterprise Server) as a Request Push and webhook target.

``target`` talks GitHub's REST API; ``markdown`` keeps what HelpSpot sent
literal in an issue's Markdown body.
"""
