"""Jira Cloud as a Request Push and webhook target.

``target`` talks Jira's REST API v3; ``adf`` makes the Atlassian Document
Format it takes for a description out of rendered text.
"""
