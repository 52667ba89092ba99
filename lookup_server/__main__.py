"""``python -m lookup_server`` is the ``lookup-server`` command."""

from lookup_server.console_script import main

main()
