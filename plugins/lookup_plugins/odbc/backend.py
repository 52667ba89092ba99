"""Live Lookup and AJAX options from a SQL database through ODBC (pyodbc).

Microsoft SQL Server is the main target; PostgreSQL, MySQL/MariaDB and SQLite
work the same way. SQL text comes from :mod:`lookup_plugins.odbc.dialects`;
this module owns connections: a small pool per source, timeouts inside the
source's ``timeout``, reconnecting after the database restarts, and error
messages for staff that never show the connection string.

The database's own statement timeout is not enough: the SQLite driver ignores
the ODBC query timeout, so a runaway query kept its thread and a core busy
long after staff got the timeout. Every statement therefore runs under
:func:`abort_on_timeout` with ``Cursor.cancel`` (SQLCancel, which every driver
here honours: SQLite interrupts, PostgreSQL and MariaDB cancel the query on the
server); the connection of a cancelled statement is closed, not pooled.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol

import pyodbc

from lookup_server.plugin import (
    BackendError,
    BackendTimeout,
    ConnectionPool,
    Customer,
    Option,
    OptionsQuery,
    SearchTerm,
    Secret,
    SourceBackend,
    SourceSettings,
    WebhookSubmitter,
    abort_on_timeout,
    phone_matches,
    timed_out,
)

from ..mirror.child import rebuilt_mirror
from ..mirror.local import Mirror
from ..mirror.settings import mirror_problems, mirror_settings
from .dialects import (
    ADSI_FIELDS,
    DIALECTS,
    STRATEGY_KEYS,
    AdsiPlan,
    Dialect,
    DialectError,
    Placeholders,
    QueryPlan,
    Statement,
    TablePlan,
    options_statement,
    parse_options_query,
    probe_terms,
)

log = logging.getLogger(__name__)

#: A pooled connection idle longer than this is pinged before it is used.
IDLE_CHECK = 30.0
QUERY_KEYS = ("customer_id", "email", "phone", "name", "options")
#: SQLSTATEs (and driver texts) meaning the connection itself is gone.
_LOST_STATES = frozenset({"08S01", "08003", "08006", "08007", "57P01", "57P02", "57P03"})
_LOST_TEXT = re.compile(
    r"connection (has been |was )?(lost|closed)|gone away|lost connection"
    r"|server closed|no connection to the server",
    re.IGNORECASE,
)
_TIMEOUT_TEXT = re.compile(
    r"statement timeout|max_statement_time|query timeout|timeout expired", re.IGNORECASE
)
_SECRET_KEYS = frozenset({"pwd", "password", "accesstoken", "authentication_key", "secret"})


@dataclass(frozen=True)
class OdbcOptions:
    """The ``[sources.NAME]`` keys of an ODBC source."""

    #: An ODBC connection string, usually ``{ env = "CRM_ODBC" }``.
    connection: Secret
    dialect: Literal["mssql", "postgresql", "mysql", "sqlite"]
    #: Simple mode: a table or view (``schema.table`` allowed), columns from ``fields``.
    table: str | None = None
    #: Queries mode: customer_id / email / phone / name, and options (AJAX).
    queries: dict[str, str] = field(default_factory=dict)
    #: ``"adsi"``: Active Directory through a SQL Server linked server.
    preset: Literal["adsi"] | None = None
    adsi_base: str | None = None
    linked_server: str = "ADSI"
    #: Open connections kept per worker process.
    pool_size: int = 4
    #: Answer every lookup from a local copy of the table refreshed this often ("5m").
    mirror: str = ""
    #: How old that copy may grow before lookups are errors (default 1 d).
    mirror_max_age: str = ""
    #: A column holding each row's last change (a time or a counter): passes read
    #: only rows changed since; without it every pass copies the whole table.
    mirror_changed_column: str = ""
    #: Where the copy lives (default: a folder of the user's state folder).
    mirror_path: Path | None = None


class Plan(Protocol):
    """Turns a search term into the statement that answers it."""

    def statement(self, term: SearchTerm, limit: int) -> Statement | None:
        """The statement for ``term``, or None when it cannot match anyone."""


class OptionProblem(Exception):
    """A configuration mistake, with the key (relative to the source) that holds it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key, self.message = key, message


class BrokenPlan:
    """Stands in for the plan of a source whose configuration is wrong."""

    def __init__(self, error: BackendError) -> None:
        self.error = error

    def statement(self, term: SearchTerm, limit: int) -> Statement | None:
        """Never a statement: the configuration error, again."""
        raise self.error


def _alive(conn: Any) -> bool:
    try:
        cursor = conn.cursor()
        with abort_on_timeout(cursor.cancel):
            cursor.execute("SELECT 1").fetchall()
    except Exception:  # any failure means: do not use this connection
        return False
    return True


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception as exc:  # already broken; nothing more to release
        log.debug("closing a broken ODBC connection failed: %s", type(exc).__name__)


class OdbcBackend(SourceBackend[OdbcOptions]):
    """Customers and AJAX options from SQL Server, PostgreSQL, MySQL or SQLite over ODBC."""

    Options = OdbcOptions

    def __init__(self, options: OdbcOptions, source: SourceSettings) -> None:
        super().__init__(options, source)
        self.dialect = DIALECTS[options.dialect]
        self._where = f"sources.{source.name}"
        self._pool: ConnectionPool[Any] = ConnectionPool(
            self._connect,
            _close_quietly,
            max(1, options.pool_size),
            ping=_alive,
            ping_after=IDLE_CHECK,
        )
        self._options_query: Placeholders | None = None
        # A configuration mistake must not stop the other sources from serving:
        # it is raised by every use of this one (and shown by check).
        # The config loader ran validate(), so this only fails for a backend built
        # by hand; even then the mistake is raised by every use, not by __init__.
        self._broken: BackendError | None = None
        try:
            self._plan, self._options_query = _build_plans(options, source)
        except OptionProblem as exc:
            key = f"{self._where}.{exc.key}" if exc.key else self._where
            self._broken = BackendError(f"{key}: {exc.message}")
            self._plan = BrokenPlan(self._broken)
        self.mirror = (
            self._mirror(self._plan)
            if options.mirror and isinstance(self._plan, TablePlan)
            else None
        )
        if self.mirror is not None:
            # lookups read the local copy (microseconds): no thread hand-off, no deadline
            self.waits_on_network = False

    @classmethod
    def validate(cls, options: Any, source: SourceSettings) -> list[tuple[str, str]]:
        """Query set, mode and placeholders checked when the config loads; a mirror's keys."""
        try:
            _build_plans(options, source)
        except OptionProblem as exc:
            return [(exc.key, exc.message)]
        return _mirror_problems(options)

    def _mirror(self, plan: TablePlan) -> Mirror:
        from .mirror_feed import OdbcMirrorFeed  # only mirrored sources need it

        o = self.options
        feed = OdbcMirrorFeed(self, plan.elements)
        identity = f"{o.connection.reveal()} {feed.signature()}"
        settings = mirror_settings(
            self.source.name, o.mirror, o.mirror_max_age, o.mirror_path, identity
        )
        rebuild = partial(rebuilt_mirror, type(self), self.options, self.source)
        return Mirror(settings, feed, self.source, rebuild)

    # -- capabilities -------------------------------------------------------------

    def find(self, term: SearchTerm, limit: int) -> Sequence[Customer]:
        """At most ``limit`` customers matching ``term``, limited in SQL (or from the mirror)."""
        if self.mirror is not None:
            return self.mirror.find(term, limit)
        statement = self._plan.statement(term, limit)
        if statement is None:
            return []
        try:
            names, rows = self._run(statement)
        except _DataError:
            # e.g. "abc" against an integer id column: no customer can have it
            return []
        customers = [Customer(dict(zip(names, map(_text, row), strict=True))) for row in rows]
        if statement.exact_id:
            customers = [c for c in customers if c.customer_id == statement.exact_id]
        if statement.phone:
            customers = [
                c for c in customers if phone_matches(c.fields.get("phone", ""), statement.phone)
            ]
        return customers[:limit]

    def find_options(self, query: OptionsQuery, limit: int) -> Sequence[Option]:
        """AJAX drop-down entries from the ``options`` query: first column value, second label."""
        self._require_config()
        if self._options_query is None:
            raise BackendError(f"{self._where}.queries.options is not configured")
        statement = options_statement(self.dialect, self._options_query, query, limit)
        _names, rows = self._run(statement)
        return [Option(_text(row[0]), _text(row[1] if len(row) > 1 else row[0])) for row in rows]

    # -- life cycle ---------------------------------------------------------------

    def prepare(self) -> None:
        """Open the first connection now, so a wrong password shows at start-up.

        A mirrored source opens its copy instead, making the first one if there is none.
        """
        self._require_config()
        if self.mirror is not None:
            self.mirror.prepare()
            return
        self._pool.give_back(self._pool_acquire())

    def start_background(self, submit: WebhookSubmitter) -> None:
        """A mirrored source refreshes its copy in the background."""
        if self.mirror is not None:
            self.mirror.start()

    def status(self) -> list[str]:
        """A mirror's age and last refresh."""
        return self.mirror.describe() if self.mirror is not None else []

    def check(self) -> list[str]:
        """Connect, then run every configured query with empty input (and a mirror's age)."""
        if self.mirror is not None:
            return self.mirror.check(self._check_database)
        return self._check_database()

    def _check_database(self) -> list[str]:
        self._require_config()
        conn = self._pool_acquire()
        try:
            warnings = self._dbms_warnings(conn)
        except pyodbc.Error as exc:
            _close_quietly(conn)
            raise self._error(exc) from None
        self._pool.give_back(conn)
        for term in probe_terms():
            statement = self._plan.statement(term, 1)
            if statement is not None:
                names = self._probe(STRATEGY_KEYS[type(term)], statement)
                if names is not None and "customer_id" not in names:
                    warnings.append(
                        f"{self._where}.queries.{STRATEGY_KEYS[type(term)]}: no "
                        "customer_id column, so its rows are never shown"
                    )
        if self._options_query is not None:
            self._probe(
                "options", options_statement(self.dialect, self._options_query, OptionsQuery(), 1)
            )
        return warnings

    def close(self) -> None:
        """Close the pooled connections; stop a mirror's refreshes."""
        if self.mirror is not None:
            self.mirror.close()
        self._pool.flush()

    def _require_config(self) -> None:
        if self._broken is not None:
            raise self._broken

    # -- running statements -----------------------------------------------------------

    def _run(self, statement: Statement) -> tuple[tuple[str, ...], list[Any]]:
        """Column elements and rows; retried once on a fresh connection if the old one died."""
        for attempt in (1, 2):
            conn = self._pool_acquire()
            try:
                cursor = conn.cursor()
                with abort_on_timeout(cursor.cancel):
                    cursor.execute(statement.sql, statement.params)
                    rows = cursor.fetchmany(statement.fetch)
                names = statement.elements or self._elements(cursor.description)
                cursor.close()
            except BackendTimeout:  # the call was aborted before the statement started
                self._pool.give_back(conn)
                raise
            except pyodbc.Error as exc:
                if timed_out():
                    # cancelled: whatever state the driver left it in, it is not pooled
                    _close_quietly(conn)
                    raise BackendTimeout(
                        f"{self._where}: the query was cancelled at the source's timeout"
                    ) from None
                if _lost(exc):
                    _close_quietly(conn)
                    # After a restart every idle connection is dead too: drop them all.
                    self._pool.flush()
                    if attempt == 1:
                        log.warning(
                            "%s: database connection lost (%s); reconnecting",
                            self._where,
                            _state(exc),
                        )
                        continue
                else:
                    self._pool.give_back(conn)
                raise self._error(exc) from None
            self._pool.give_back(conn)
            return names, rows
        raise AssertionError("unreachable")

    def _elements(self, description: Sequence[tuple[Any, ...]]) -> tuple[str, ...]:
        columns = {column: element for element, column in self.source.fields.items()}
        return tuple(columns.get(d[0]) or _element_name(d[0]) for d in description)

    def _probe(self, label: str, statement: Statement) -> tuple[str, ...] | None:
        """The result's element names, or None when the empty value did not fit a column."""
        try:
            return self._run(statement)[0]
        except _DataError:
            return None  # the query ran; only the empty value did not fit a column type
        except BackendError as exc:
            raise BackendError(f"{exc} (while running the {label} query)") from None

    def _pool_acquire(self) -> Any:
        try:
            return self._pool.take()[0]
        except pyodbc.Error as exc:
            raise self._error(exc, connecting=True) from None

    def _connect(self, limit_queries: bool = True) -> Any:
        """A new connection; ``limit_queries``: the database cancels a query past the timeout."""
        login, query = _timeouts(self.source.timeout)
        # autocommit: a read-only lookup must not leave a transaction open
        conn = pyodbc.connect(self.options.connection.reveal(), timeout=login, autocommit=True)
        if limit_queries:
            self._limit_queries(conn, query)
        return conn

    def _limit_queries(self, conn: Any, seconds: float) -> None:
        """Make the database cancel a query that outlives the source's timeout."""
        ms = int(seconds * 1000)
        attempts: dict[str, list[str]] = {
            # psqlODBC ignores SQL_ATTR_QUERY_TIMEOUT; the server enforces this one.
            "postgresql": [f"SET statement_timeout = {ms}"],
            # MariaDB's driver accepts the ODBC attribute but does not act on it.
            "mysql": [
                f"SET SESSION max_statement_time = {seconds:.3f}",  # MariaDB
                f"SET SESSION max_execution_time = {ms}",
            ],  # MySQL
        }
        for sql in attempts.get(self.dialect.name, []):
            try:
                conn.execute(sql)
                return
            except pyodbc.Error:
                continue
        try:
            conn.timeout = max(1, math.floor(seconds))
        except pyodbc.Error:
            log.warning(
                "%s: the ODBC driver cannot limit query time; only the source's "
                "timeout protects staff from a slow query",
                self._where,
            )

    def _dbms_warnings(self, conn: Any) -> list[str]:
        warnings = []
        dbms = str(conn.getinfo(pyodbc.SQL_DBMS_NAME))
        expected = {
            "mssql": "sql server",
            "postgresql": "postgres",
            "mysql": "mysql|mariadb",
            "sqlite": "sqlite",
        }[self.dialect.name]
        if not re.search(expected, dbms, re.IGNORECASE):
            # Nothing dialect-specific can be probed on the wrong database: with the
            # wrong text decoding, even reading the answer can fail.
            return [
                f"{self._where}.dialect: {self.dialect.name!r} but the database says it is {dbms!r}"
            ]
        if self.dialect.name == "postgresql":
            lowered = conn.execute("SELECT LOWER('ÀÉÑ')").fetchone()[0]
            if lowered != "àéñ":
                warnings.append(
                    f"{self._where}: the database's LC_CTYPE does not lower-case "
                    "accented letters; names like 'Núñez' match case-sensitively"
                )
        return warnings

    # -- errors staff can act on ----------------------------------------------------------

    def _error(self, exc: Any, connecting: bool = False) -> BackendError:
        state, text = _state(exc), self._scrub(_message(exc))
        where = f"{self._where}.connection" if connecting else self._where
        if isinstance(exc, pyodbc.DataError) and not connecting:
            return _DataError(f"{where}: {text}")
        if "can't open lib" in text.lower() or state == "IM002":
            installed = ", ".join(pyodbc.drivers()) or "none"
            return BackendError(
                f"{where}: the ODBC driver {self._driver()!r} is not installed "
                f"(installed: {installed}; see docs/backends/odbc.md)"
            )
        if state == "28000" or re.search(
            r"(?i)authentication failed|access denied|login failed"
            r"|role .* does not exist",
            text,
        ):
            return BackendError(
                f"{where}: login failed; check the user and password in the "
                f"connection string ({text})"
            )
        if state in ("HYT00", "HYT01", "57014") or _TIMEOUT_TEXT.search(text):
            return BackendTimeout(f"{where}: the query took longer than the source's timeout")
        if state in ("42S02", "42P01") or re.search(
            r"(?i)no such table|doesn't exist|invalid "
            r"object name",
            text,
        ):
            return BackendError(f"{where}: table or view missing: {text}")
        if state in ("42S22", "42703") or re.search(r"(?i)no such column|invalid column", text):
            return BackendError(f"{where}: column missing (check fields): {text}")
        if connecting or state.startswith("08"):
            return BackendError(f"{where}: cannot connect to the database: {text}")
        return BackendError(f"{where}: database error {state}: {text}")

    def _scrub(self, text: str) -> str:
        """Driver text with the connection string and every password in it removed."""
        conn_str = self.options.connection.reveal()
        secrets = [conn_str]
        for part in conn_str.split(";"):
            key, _, value = part.partition("=")
            if key.strip().lower() in _SECRET_KEYS and value.strip().strip("{}"):
                secrets.append(value.strip().strip("{}"))
        for secret in sorted(secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def _driver(self) -> str:
        match = re.search(r"(?i)driver\s*=\s*\{?([^};]*)", self.options.connection.reveal())
        return match.group(1).strip() if match else "(from the DSN)"


class _DataError(BackendError):
    """A value did not fit the column's type (not worth telling staff about)."""


def _state(exc: Any) -> str:
    args: tuple[Any, ...] = getattr(exc, "args", ())
    return str(args[0]) if args and isinstance(args[0], str) else "?"


def _message(exc: Any) -> str:
    args: tuple[Any, ...] = getattr(exc, "args", ())
    text = str(args[1]) if len(args) > 1 else str(exc)
    text = re.sub(r"\s*\((SQL\w+)\)\s*$", "", text.replace("\n", " ")).strip()
    text = re.sub(r";\s*Error while \w+ (the query|parameters).*$", "", text)  # psqlODBC noise
    return re.sub(r"\s+", " ", text)


def _lost(exc: Any) -> bool:
    return _state(exc) in _LOST_STATES or bool(_LOST_TEXT.search(_message(exc)))


def _timeouts(timeout: float) -> tuple[int, float]:
    """Login and query timeouts: together inside the source's timeout from 2.5 s up.

    ODBC counts login timeouts in whole seconds, so shorter source timeouts
    rely on the core's own deadline while connecting.
    """
    return max(1, math.floor(timeout * 0.4)), timeout * 0.6


def _element_name(column: str) -> str:
    """PostgreSQL folds unquoted aliases to lower case: ``AS Custom3`` arrives as custom3."""
    match = re.fullmatch(r"(?i)custom([0-9]+)", column)
    return f"Custom{match.group(1)}" if match else column


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _mirror_problems(opts: OdbcOptions) -> list[tuple[str, str]]:
    """A mirror copies a table: simple mode only, and a changed column that is an identifier."""
    problems = mirror_problems(opts.mirror, opts.mirror_max_age)
    if opts.mirror and not opts.table:
        problems.append(
            (
                "mirror",
                "needs simple mode (table = ...): a mirror copies a table, "
                "and queries cannot say what every search may return",
            )
        )
    if opts.mirror_changed_column:
        if not opts.mirror:
            problems.append(("mirror_changed_column", 'only applies with mirror = "<interval>"'))
        try:
            DIALECTS[opts.dialect].quote(opts.mirror_changed_column)
        except DialectError as exc:
            problems.append(("mirror_changed_column", str(exc)))
    return problems


def _build_plans(opts: OdbcOptions, source: SourceSettings) -> tuple[Plan, Placeholders | None]:
    """The statement plans of a source; OptionProblem names the key that is wrong."""
    dialect = DIALECTS[opts.dialect]
    unknown = sorted(set(opts.queries) - set(QUERY_KEYS))
    if unknown:
        raise OptionProblem(
            f"queries.{unknown[0]}", f"unknown query (expected {', '.join(QUERY_KEYS)})"
        )
    strategy_queries = {k: v for k, v in opts.queries.items() if k != "options"}
    modes = [
        m
        for m, on in (("table", opts.table), ("queries", strategy_queries), ("preset", opts.preset))
        if on
    ]
    if len(modes) != 1:
        found = " and ".join(modes) or "none"
        raise OptionProblem(
            "",
            "set exactly one of table, queries (customer_id, email, phone, "
            f"name) or preset; found {found}",
        )
    try:
        options_query = (
            parse_options_query(dialect, opts.queries["options"])
            if "options" in opts.queries
            else None
        )
        return _plan_for(modes[0], dialect, opts, source, strategy_queries), options_query
    except DialectError as exc:
        raise OptionProblem(modes[0], str(exc)) from None


def _plan_for(
    mode: str,
    dialect: Dialect,
    opts: OdbcOptions,
    source: SourceSettings,
    queries: Mapping[str, str],
) -> Plan:
    if mode == "table":
        return TablePlan(dialect, opts.table or "", source)
    if mode == "queries":
        return QueryPlan(dialect, queries)
    if dialect.name != "mssql" or not opts.adsi_base:
        raise DialectError(
            'the adsi preset needs dialect = "mssql" and adsi_base '
            '(e.g. "LDAP://DC=example,DC=com")'
        )
    return AdsiPlan(dialect, opts.linked_server, opts.adsi_base, {**ADSI_FIELDS, **source.fields})
