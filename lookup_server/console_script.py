"""The ``lookup-server`` script: HelpSpot's command-line lookups start without click.

A command-line lookup is a new process on every click of staff
(HELPSPOT.md §2); click and the other commands' imports cost it about 9 ms
(see bench/README.md). Every other command goes through :mod:`lookup_server.cli`.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Console-script entry point."""
    if sys.argv[1:2] == ["livelookup"]:
        from lookup_server.livelookup_command import run_livelookup

        run_livelookup(sys.argv[2:])
    from lookup_server.cli import main as click_main

    click_main()
