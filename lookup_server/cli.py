"""The ``lookup-server`` command.

HelpSpot's command-line mode spawns one process per lookup, so this module
imports only click at start-up; each command imports what it needs, and
``livelookup`` never imports Flask.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from lookup_server.livelookup_command import run_livelookup

if TYPE_CHECKING:
    from lookup_server.config.settings import Config
    from lookup_server.webhooks import Attempt, OutboxEntry, WebhookOutbox

CONFIG_HELP = "TOML configuration (default: $LOOKUP_SERVER_CONFIG, else the built-in demo)."


@click.group()
@click.version_option(package_name="lookup-server")
def cli() -> None:
    """HelpSpot Live Lookup, AJAX fields, Request Push and webhooks, from one server."""


def main() -> None:
    """Console-script entry point."""
    cli()


def _load(config_path: str | None) -> Config:
    from lookup_server.config.settings import ConfigError, load_config

    try:
        return load_config(config_path)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)


# -- livelookup: HelpSpot's command-line mode ------------------------------------------


class VerbatimCommand(click.Command):
    """A command handed its arguments exactly as given, every ``--`` included.

    click's parser consumes the first ``--`` (and so would let a HelpSpot value
    after it like ``--config=/etc/passwd`` pass for our option); livelookup
    needs it to know where HelpSpot's arguments begin (split_own_options).
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Keep every argument for the command, unparsed."""
        ctx.args = list(args)
        return ctx.args


@cli.command(cls=VerbatimCommand, context_settings={"help_option_names": []})
@click.pass_context
def livelookup(ctx: click.Context) -> None:
    """Answer HelpSpot's command-line Live Lookup: livelookup [--config PATH] --source NAME -- ...

    HelpSpot's arguments follow the --: 5.3+ named (--customer_id=1 --email) or
    5.0.x positional (customer_id first_name last_name email phone ...).
    Prints the livelookup XML; exit status 0 also when nothing matched.
    """
    run_livelookup(ctx.args)


# -- serve, check, plugins, validate ----------------------------------------------------


@cli.command()
@click.option("--config", "config_path", help=CONFIG_HELP)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
def serve(config_path: str | None, host: str, port: int) -> None:
    """Run the development server (use gunicorn wsgi:app in production)."""
    from lookup_server.web.access_log import configure_logging
    from lookup_server.web.app import create_app, run_development_server

    config = _load(config_path)
    configure_logging(config.server.log_format)
    run_development_server(create_app(config), host, port)


@cli.command()
@click.option("--config", "config_path", help=CONFIG_HELP)
def check(config_path: str | None) -> None:
    """Validate the configuration, probe every source and target and the outbox, like nginx -t."""
    from lookup_server.runtime.probe import probe_all

    config = _load(config_path)
    click.echo(f"{config.origin}: configuration is valid")
    failed = 0
    for line, ok in probe_all(config):
        click.echo(line)
        failed += not ok
    if failed:
        click.echo(f"{failed} check(s) failed", err=True)
        sys.exit(1)


@cli.command()
def plugins() -> None:
    """List the registered backends, and those that failed to load and why."""
    from lookup_server.core.registry import Registry

    registry = Registry()
    for title, group in (("sources", registry.sources), ("targets", registry.targets)):
        loaded, failures = group.load_all()
        click.echo(f"{title} ({group.group}):")
        for name, cls in sorted(loaded.items()):
            capabilities = ", ".join(sorted(cls.capabilities()))
            click.echo(f"  {name:10} {cls.__module__}.{cls.__name__}  [{capabilities}]")
        for failure in failures:
            click.echo(f"  {failure.name:10} FAILED: {failure.error}")


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def validate(file: Path) -> None:
    """Check a livelookup or ajaxfield XML file against its schema and as HelpSpot reads it."""
    from lookup_server.helpspot.render import schema_errors
    from lookup_server.helpspot.view import HelpSpotParseError, read_ajaxfield, read_livelookup

    body = file.read_bytes()
    if b"<ajaxfield" in body:
        problems = schema_errors(body, "ajaxfield")
        options = read_ajaxfield(body)
        click.echo(f"HelpSpot's drop-down shows {len(options)} option(s):")
        for number, (value, description) in enumerate(options, 1):
            click.echo(f"  {value!r}: {description}")
            if not value:
                problems.append(f"option {number}: HelpSpot reads an empty value")
    else:
        problems = schema_errors(body)
        try:
            view = read_livelookup(body)
        except HelpSpotParseError as exc:
            problems.append(f"HelpSpot would show an error: {exc}")
        else:
            click.echo(f"HelpSpot reads {len(view.customers)} customer(s); staff see:")
            click.echo("  " + view.summary().replace("\n", "\n  "))
    for problem in problems:
        click.echo(f"{file}: {problem}", err=True)
    sys.exit(1 if problems else 0)


# -- Request Push bridge and the webhook outbox ------------------------------------------


@cli.command()
@click.argument("target")
@click.option(
    "--url",
    "base_url",
    required=True,
    help="This server's address as HelpSpot's PHP reaches it (https://lookup.example.com).",
)
@click.option("--key", help="The key (default: [server] push_key, else shared_key, of the config).")
@click.option("--name", help="Writes RequestPush-NAME.php (default: the target's name).")
@click.option("--config", "config_path", help=CONFIG_HELP)
@click.option("--insecure", is_flag=True, help="Do not verify this server's TLS certificate.")
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder to write into: HelpSpot's custom_code/.",
)
def bridge(
    target: str,
    base_url: str,
    key: str | None,
    name: str | None,
    config_path: str | None,
    insecure: bool,
    output: Path,
) -> None:
    """Write the PHP class through which HelpSpot's Request Push reaches TARGET."""
    from lookup_server.config.settings import ENV_VAR
    from lookup_server.helpspot.bridge import (
        BridgeError,
        bridge_filename,
        render_bridge,
        write_bridge,
    )

    if key is None or config_path or os.environ.get(ENV_VAR):
        config = _load(config_path)
        if (
            target not in config.targets
            or "push" not in config.targets[target].backend_class.capabilities()
        ):
            _fail(f"{config.origin}: no [targets.{target}] that accepts Request Push")
        push_key = config.server.key_for("push")
        if key is None and push_key is not None:
            key = push_key.reveal()
    try:
        file = output / bridge_filename(name or target)
        write_bridge(
            file, render_bridge(target, base_url, key, name or target, verify_tls=not insecure)
        )
    except BridgeError as exc:
        _fail(str(exc))
    click.echo(f"wrote {file}")
    if key:
        click.echo(
            f"{file} holds the shared key: keep it out of reach of other users (chmod "
            "640, owned by the web server's group), never world-readable",
            err=True,
        )
    else:
        click.echo("no shared key: anyone who can reach the server can push", err=True)


def _fail(message: str) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(2)


@cli.group()
def outbox() -> None:
    """See and handle stored webhooks ([server] outbox)."""


@contextmanager
def _outbox(config: Config) -> Iterator[WebhookOutbox]:
    """The configured outbox; any trouble with it ends the command with one clear line."""
    from lookup_server.webhooks import OutboxError, open_outbox

    path = config.server.outbox
    if config.server.outbox_url is None and not path.exists():
        if not path.parent.is_dir():
            _fail(f"{path}: no outbox: {path.parent} is not a folder (check [server] outbox)")
        _fail(f"{path}: no outbox yet (no webhook was ever received)")
    try:
        yield open_outbox(config.server.outbox_location)
    except OutboxError as exc:
        _fail(str(exc))


@outbox.command("list")
@click.option("--config", "config_path", help=CONFIG_HELP)
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(["pending", "delivering", "delivered", "failed", "refused"]),
)
@click.option(
    "--limit",
    default=100,
    show_default=True,
    type=click.IntRange(min=0),
    help="Show the newest N webhooks and refusals (0: all).",
)
def outbox_list(config_path: str | None, states: tuple[str, ...], limit: int) -> None:
    """Webhooks with their state, attempts and last error, then those refused as too large.

    Read a page at a time: any size of outbox lists in constant memory.
    """
    webhook_states = [s for s in states if s != "refused"] if states else None
    with _outbox(_load(config_path)) as box:
        if webhook_states is None or webhook_states:
            _list_webhooks(box, webhook_states, limit)
        if not states or "refused" in states:
            _list_refusals(box, limit)


def _list_webhooks(box: WebhookOutbox, states: list[str] | None, limit: int) -> None:
    after, older = box.newest(limit, states) if limit else (0, 0)  # type: ignore[arg-type]
    shown = 0
    for e in box.summaries(states, after_id=after):  # type: ignore[arg-type]
        error = f"  last error: {e.last_error}" if e.last_error else ""
        click.echo(
            f"{e.id:>6}  {_when(e.created_at)}  {e.target:<16} {e.state:<10} "
            f"attempts={e.attempts}{error}"
        )
        shown += 1
    click.echo(f"{shown} webhook(s){_older(older)}", err=True)


def _list_refusals(box: WebhookOutbox, limit: int) -> None:
    after, older = box.newest(limit, table="refusals") if limit else (0, 0)
    shown = 0
    for r in box.refusals(after_id=after):
        if not shown:
            click.echo(
                "refused as larger than [server] max_body_bytes (not stored, cannot be retried):"
            )
        size = f"more than {r.limit_bytes}" if r.size_bytes is None else str(r.size_bytes)
        click.echo(
            f"{'-':>6}  {_when(r.refused_at)}  {r.target:<16} {'refused':<10} "
            f"size={size} bytes  request={r.request_id or 'unknown'}"
        )
        shown += 1
    click.echo(f"{shown} refused webhook(s){_older(older)}", err=True)


def _when(timestamp: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _older(count: int) -> str:
    return f", and {count} older not shown (--limit 0 lists all)" if count else ""


@outbox.command("show")
@click.argument("webhook_id", type=int)
@click.option("--payload", is_flag=True, help="Print only the payload, as JSON.")
@click.option("--config", "config_path", help=CONFIG_HELP)
def outbox_show(webhook_id: int, payload: bool, config_path: str | None) -> None:
    """A webhook's state, times, keys and every recorded attempt (its payload's size only)."""
    import json

    from lookup_server.webhooks import OutboxError

    with _outbox(_load(config_path)) as box:
        entry = box.get(webhook_id)
        if entry is None:
            raise OutboxError(f"no webhook with id {webhook_id} in the outbox")
        attempts = [] if payload else box.attempts(webhook_id)
    if payload:
        click.echo(json.dumps(entry.payload, ensure_ascii=False, indent=2))
        return
    for label, value in _described(entry):
        click.echo(f"{label:<16} {value}")
    click.echo(f"{len(attempts)} recorded attempt(s){':' if attempts else ''}")
    for attempt in attempts:
        click.echo(_attempt_line(attempt))


def _described(entry: OutboxEntry) -> Iterator[tuple[str, str]]:
    """The label and value of each line ``outbox show`` prints about a webhook itself."""
    import json

    from lookup_server.core.backend import showable_excerpt

    yield "webhook", f"{entry.id} for target {entry.target!r}"
    yield "state", entry.state
    yield "created", _when(entry.created_at)
    yield "updated", _when(entry.updated_at)
    if entry.state == "pending":
        yield "next attempt", _when(entry.next_attempt_at)
    if entry.state == "delivering":
        yield "lease", f"{entry.lease_owner} until {_when(entry.lease_expires_at)}"
    yield "attempts", str(entry.attempts)
    if entry.last_error:
        yield "last error", entry.last_error
    yield "idempotency key", entry.idempotency_key
    request = entry.payload.get("xRequest")
    if isinstance(request, str | int) and str(request):
        yield "request", showable_excerpt(str(request), 40)
    size = len(json.dumps(entry.payload, ensure_ascii=False).encode("utf-8"))
    yield "payload", f"{size} bytes (--payload prints it)"


def _attempt_line(attempt: Attempt) -> str:
    """One attempt in ``outbox show``: number, time, outcome, and the peer's answer below."""
    status = "-" if attempt.status is None else f"HTTP {attempt.status}"
    outcome = "delivered" if attempt.delivered else f"failed: {attempt.error}"
    line = (
        f"  #{attempt.number:<3} {_when(attempt.started_at)}  {status:<8} "
        f"{attempt.duration_ms:>7} ms  {outcome}"
    )
    if attempt.answer:
        line += "\n        answer: " + attempt.answer.replace("\n", "\n                ")
    return line


@outbox.command("retry")
@click.argument("webhook_id", type=int, required=False)
@click.option("--failed", is_flag=True, help="Every failed webhook of --target, not one ID.")
@click.option("--target", help="With --failed: the target whose failed webhooks to retry.")
@click.option("--since", help="With --failed: only those received at or after this ISO time.")
@click.option("--until", help="With --failed: only those received before this ISO time.")
@click.option("--config", "config_path", help=CONFIG_HELP)
def outbox_retry(
    webhook_id: int | None,
    failed: bool,
    target: str | None,
    since: str | None,
    until: str | None,
    config_path: str | None,
) -> None:
    """Deliver a failed or waiting webhook again, now (the running server picks it up).

    With --failed --target NAME instead of an ID: every failed webhook of that
    target, at once; --since and --until (ISO 8601, local time unless it has an
    offset) keep those received in that range, to replay an outage. Either way
    the attempts start over and the recorded ones are kept.
    """
    from lookup_server.webhooks import OutboxError, parse_moment

    ranged = since is not None or until is not None
    if webhook_id is not None and not failed and target is None and not ranged:
        with _outbox(_load(config_path)) as box:
            entry = box.retry(webhook_id)
        click.echo(f"webhook {entry.id} for {entry.target!r} is pending again")
    elif webhook_id is None and failed and target is not None:
        try:
            start = None if since is None else parse_moment(since, "--since")
            end = None if until is None else parse_moment(until, "--until")
        except OutboxError as exc:
            raise click.UsageError(str(exc)) from None
        _retry_failed(_load(config_path), target, start, end)
    else:
        raise click.UsageError(
            "give a webhook ID, or --failed --target NAME [--since TIME] [--until TIME]"
        )


def _retry_failed(config: Config, target: str, since: float | None, until: float | None) -> None:
    """Make the failed webhooks of ``target``, a configured target, pending again."""
    if target not in config.targets:
        _fail(f"{config.origin}: no [targets.{target}] (its webhooks would only fail again)")
    with _outbox(config) as box:
        count = box.retry_failed(target, since=since, until=until)
    click.echo(f"{count} failed webhook(s) for {target!r} pending again")


@outbox.command("purge")
@click.option("--older-than", "days", type=float, required=True, help="Age in days.")
@click.option("--config", "config_path", help=CONFIG_HELP)
def outbox_purge(days: float, config_path: str | None) -> None:
    """Delete delivered and failed webhooks, and refusals, older than DAYS.

    Pending webhooks are kept. The server does this by itself after [server]
    outbox_retention_days.
    """
    with _outbox(_load(config_path)) as box:
        purged = box.purge(days)
    click.echo(f"purged {purged.webhooks} webhook(s) and {purged.refusals} refusal(s)")
