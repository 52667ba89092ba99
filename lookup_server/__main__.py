"""``python -m lookup_server`` is the ``lookup-server`` command."""

from lookup_server.cli import main

main()
