"""The bottom layer: data models, backend base classes and registry, search, calls, pools.

Nothing here imports Flask, lxml or a layer above it (tests/test_layering.py).
"""
