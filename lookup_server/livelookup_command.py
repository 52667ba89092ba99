"""HelpSpot's command-line Live Lookup: ``lookup-server livelookup --source NAME --``.

HelpSpot starts a process per lookup and staff wait for it on every click,
so the ``lookup-server`` script (:mod:`lookup_server.console_script`) runs
this without loading click, and it imports only what a lookup needs: no
Flask, no templates, no lxml when the answer is joined from stored fragments.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from lookup_server.config.settings import Config
    from lookup_server.helpspot.answers import Answer


def split_own_options(args: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Our ``--config``/``--source`` from the front of ``args``; the rest is HelpSpot's.

    Only a leading run of our own options is ours, each at most once, and ``--``
    ends it. Names must match exactly: ``--source_id`` is HelpSpot's, not an
    abbreviation of anything.
    """
    own: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return own, list(args[i + 1 :])
        name, eq, value = arg.partition("=")
        if name not in ("--config", "--source") or name[2:] in own:
            break
        if not eq:
            if i + 1 >= len(args):
                break
            i, value = i + 1, args[i + 1]
        own[name[2:]] = value
        i += 1
    return own, list(args[i:])


def run_livelookup(args: list[str]) -> NoReturn:
    """Answer one command-line lookup: print the livelookup XML and exit (0 when answered)."""
    import time

    from lookup_server.config.settings import ConfigError, load_config
    from lookup_server.helpspot.answers import TEXT, Answer, livelookup_answer
    from lookup_server.helpspot.decode import cli_params
    from lookup_server.runtime.service import Sources

    started = time.time(), time.perf_counter()
    own, helpspot_args = split_own_options(args)
    if "source" not in own:
        _print_answer(Answer(2, b"lookup-server error: --source NAME is required\n", TEXT))
    try:
        config = load_config(own.get("config"))
    except ConfigError as exc:
        logging.getLogger(__name__).error("%s", exc)
        _print_answer(
            Answer(
                2,
                b"lookup-server error: the configuration has problems (run lookup-server check)\n",
                TEXT,
            )
        )
    # build only the source asked for: the others may be slow to start or down
    only = {k: v for k, v in config.sources.items() if k == own["source"]}
    try:
        sources = Sources(dataclasses.replace(config, sources=only))
        try:
            sources.prepare()  # e.g. the first index of a CSV: outside the lookup's deadline
            answer = livelookup_answer(
                sources, own["source"], cli_params(helpspot_args), command_line=True
            )
        finally:
            sources.close()
    except Exception:
        # HelpSpot reads stdout only, and an empty one as "No customers found"
        # (HELPSPOT.md §3): a failure must print a reason there too.
        logging.getLogger(__name__).exception("livelookup: unexpected error")
        answer = Answer(
            500, b"lookup-server error: internal error (details on standard error)\n", TEXT
        )
    if config.console.enabled:
        took_ms = (time.perf_counter() - started[1]) * 1000
        _record_call(config, own["source"], helpspot_args, answer, started[0], took_ms)
    _print_answer(answer)


def _record_call(
    config: Config, source: str, args: list[str], answer: Answer, at: float, took_ms: float
) -> None:
    """Add a command-line lookup to the console's recent calls, as the server adds its own.

    HelpSpot waits for the process to end, so this is on staff's time: one
    small write without fsync, and any trouble with it is only logged.
    """
    import shlex

    from lookup_server.telemetry import (
        UNKNOWN_NAME,
        CallRecord,
        outcome_for,
        reason_of,
        shortened,
    )
    from lookup_server.telemetry.activity import Activity, activity_file

    record = CallRecord(
        at=at,
        endpoint="livelookup",
        name=source if source in config.sources else UNKNOWN_NAME,
        outcome=outcome_for(answer.status, answer.count),
        status=answer.status,
        duration_ms=took_ms,
        count=answer.count,
        detail=reason_of(answer.body.decode("utf-8", "replace")) if answer.status != 200 else "",
        path=shortened("command line: " + " ".join(map(shlex.quote, args))),
        remote_addr="command line",
    )
    Activity(activity_file(config.server.outbox)).store([record])


def _print_answer(answer: Answer) -> NoReturn:
    sys.stdout.buffer.write(answer.body)
    sys.stdout.flush()
    # HelpSpot reads stdout only; the exit status is for people and scripts.
    sys.exit(0 if answer.status == 200 else 1)
