"""The ODBC backend against real PostgreSQL, MariaDB and SQLite, and its generated SQL."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyodbc
import pytest
from lookup_plugins.odbc.backend import OdbcBackend
from lookup_plugins.odbc.dialects import (
    DIALECTS,
    DialectError,
    adsi_allowed,
    adsi_query,
    glob_pattern,
    parse_placeholders,
)

from lookup_server.config.settings import ConfigError, config_from_mapping
from lookup_server.plugin import (
    BackendError,
    BackendTimeout,
    ByEmail,
    ById,
    ByName,
    ByPhone,
    OptionsQuery,
)
from tests.plugins.databases import (
    FIELDS,
    MARIADB,
    POSTGRES,
    Database,
    people_source,
    sqlite_database,
)
from tests.support.backend_contract import HOSTILE, PEOPLE, BackendContract, Person
from tests.support.hanging import as_source, hang_every_slot, wait_for


def make_backend(table: dict[str, Any], tmp_path: Path | None = None) -> OdbcBackend:
    """A backend built from a ``[sources.people]`` table through the real config path."""
    config = config_from_mapping({"sources": {"people": table}}, tmp_path or Path.cwd())
    backend = config.sources["people"].create_backend()
    assert isinstance(backend, OdbcBackend)
    return backend


@pytest.fixture(scope="module")
def sqlite_db(tmp_path_factory: pytest.TempPathFactory) -> Database:
    """SQLite in a temporary file."""
    db = sqlite_database(str(tmp_path_factory.mktemp("sqlite") / "people.db"))
    db.require()
    return db


@pytest.fixture(scope="module", params=["postgresql", "mysql", "sqlite"])
def database(request: pytest.FixtureRequest) -> Database:
    """Each real database in turn."""
    if request.param == "sqlite":
        db: Database = request.getfixturevalue("sqlite_db")
    else:
        db = POSTGRES if request.param == "postgresql" else MARIADB
        db.require()
    return db


@pytest.fixture(scope="module")
def people(database: Database) -> Iterator[tuple[Database, str]]:
    """A PEOPLE table in each database: (database, table name)."""
    with database.people_table() as name:
        yield database, name


@pytest.fixture
def backend(people: tuple[Database, str]) -> Iterator[OdbcBackend]:
    """A simple-mode backend over the people table."""
    db, table = people
    backend = make_backend(people_source(db, table, max_results=5))
    yield backend
    backend.close()


# -- the shared contract, once per database (and once in queries mode) -------------


class TestPostgresContract(BackendContract):
    backend_name = "odbc"

    @pytest.fixture(scope="class")
    @classmethod
    def contract_source(cls) -> Iterator[dict[str, Any]]:
        POSTGRES.require()
        with POSTGRES.people_table() as table:
            yield people_source(POSTGRES, table)


class TestMariaDbContract(BackendContract):
    backend_name = "odbc"

    @pytest.fixture(scope="class")
    @classmethod
    def contract_source(cls) -> Iterator[dict[str, Any]]:
        MARIADB.require()
        with MARIADB.people_table() as table:
            yield people_source(MARIADB, table)


class TestSqliteContract(BackendContract):
    backend_name = "odbc"

    @pytest.fixture(scope="class")
    @classmethod
    def contract_source(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
        db = sqlite_database(str(tmp_path_factory.mktemp("contract") / "people.db"))
        db.require()
        with db.people_table() as table:
            yield people_source(db, table)


def people_queries(table: str) -> dict[str, str]:
    """Queries mode over a people table, as an admin would write it for PostgreSQL."""
    head = (
        "SELECT cust_id AS customer_id, given_name AS first_name, family_name AS last_name,"
        f' mail AS email, tel AS phone, "job title" AS title FROM {table}'
    )
    return {
        "customer_id": f"{head} WHERE cust_id = ?",
        "email": f"{head} WHERE LOWER(mail) = :email_lower",
        "phone": f"{head} WHERE tel LIKE ?",
        "name": f"{head} WHERE LOWER(family_name) LIKE ? ESCAPE '!'"
        " AND LOWER(given_name) LIKE ? ESCAPE '!' ORDER BY cust_id",
    }


class TestPostgresQueriesContract(BackendContract):
    backend_name = "odbc"

    @pytest.fixture(scope="class")
    @classmethod
    def contract_source(cls) -> Iterator[dict[str, Any]]:
        POSTGRES.require()
        with POSTGRES.people_table() as table:
            yield {
                "backend": "odbc",
                "connection": POSTGRES.connection,
                "dialect": "postgresql",
                "queries": people_queries(table),
            }


# -- behaviour through find() on every database ---------------------------------------


def ids(customers: Any) -> list[str]:
    """Sorted customer ids."""
    return sorted(c.customer_id for c in customers)


def test_values_come_back_under_element_names(backend: OdbcBackend) -> None:
    (found,) = backend.find(ById("1003"), 5)
    assert found.fields == {e: v for e, v in PEOPLE[2].as_fields().items() if e in FIELDS}


def test_accents_fold_both_ways(backend: OdbcBackend) -> None:
    assert ids(backend.find(ByName("NÚÑ"), 5)) == ["1002"]
    assert ids(backend.find(ByName("ünder_"), 5)) == ["1008"]
    assert ids(backend.find(ByName("Smith", "ZOË"), 5)) == []
    assert ids(backend.find(ByName("Nun"), 5)) == []  # accents are not ignored


def test_phone_candidates_are_filtered_exactly(backend: OdbcBackend) -> None:
    assert ids(backend.find(ByPhone("5550102000"), 5)) == ["1002"]
    assert ids(backend.find(ByPhone("15550102000"), 5)) == ["1002"]  # stored is a suffix
    assert ids(backend.find(ByPhone("0102000"), 5)) == ["1002"]  # input is a suffix
    assert ids(backend.find(ByPhone("102000"), 5)) == []  # too short for a suffix
    assert ids(backend.find(ByPhone("5550102001"), 5)) == []


def test_limit_is_applied(backend: OdbcBackend) -> None:
    assert len(backend.find(ByName("smith"), 3)) == 3


@pytest.mark.parametrize(
    "text",
    [
        *HOSTILE,
        "1001' OR '1'='1",
        "1001; DROP TABLE people; --",
        "x'); DELETE FROM people; --",
        "%' --",
        "\\'; SELECT 1; --",
    ],
)
def test_injection_matches_nothing_and_changes_nothing(
    backend: OdbcBackend, people: tuple[Database, str], text: str
) -> None:
    db, table = people
    assert backend.find(ById(text), 5) == []
    assert backend.find(ByEmail(text + "@example.com"), 5) == []
    for customer in backend.find(ByName(text), 5):
        assert customer.fields["last_name"].casefold().startswith(text.casefold())
    assert db.count(table) == len(PEOPLE)


def test_connections_are_reused(backend: OdbcBackend) -> None:
    for _ in range(5):
        backend.find(ById("1001"), 5)
    assert backend._pool.opened == 1


def test_check_runs_every_query(backend: OdbcBackend) -> None:
    assert backend.check() == []


def test_check_warns_about_a_query_without_customer_id(people: tuple[Database, str]) -> None:
    db, table = people
    q = DIALECTS[db.dialect].quote
    backend = make_backend(
        {
            "backend": "odbc",
            "dialect": db.dialect,
            "connection": db.connection,
            "queries": {"email": f"SELECT {q('mail')} FROM {q(table)} WHERE {q('mail')} = ?"},
        }
    )
    assert backend.check() == [
        "sources.people.queries.email: no customer_id column, so its rows are never shown"
    ]
    backend.close()


def test_concurrent_lookups_share_a_bounded_pool(backend: OdbcBackend) -> None:
    # Bounded: never more connections open at once than calls in flight, and at
    # most pool_size kept idle. (The total opened may exceed both: a connection
    # given back while pool_size are idle is closed, and a later call opens one.)
    pool_ = backend._pool
    lock, now_open, most_open = threading.Lock(), [0], [0]
    connect, close = pool_._connect, pool_._close

    def counted_connect() -> Any:
        conn = connect()
        with lock:
            now_open[0] += 1
            most_open[0] = max(most_open[0], now_open[0])
        return conn

    def counted_close(conn: Any) -> None:
        with lock:
            now_open[0] -= 1
        close(conn)

    pool_._connect, pool_._close = counted_connect, counted_close

    def look(person: Person) -> list[str]:
        return [c.customer_id for _ in range(10) for c in backend.find(ById(person.customer_id), 5)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        found = list(pool.map(look, PEOPLE))
    assert found == [[p.customer_id] * 10 for p in PEOPLE]
    assert 1 <= most_open[0] <= 8
    assert len(pool_.idle()) == now_open[0] <= backend.options.pool_size


def test_check_names_a_missing_table(people: tuple[Database, str]) -> None:
    db, _table = people
    backend = make_backend(people_source(db, "no_such_table"))
    with pytest.raises(BackendError, match="table or view missing"):
        backend.check()


def test_check_names_a_missing_column(people: tuple[Database, str]) -> None:
    db, table = people
    backend = make_backend(people_source(db, table, fields={**FIELDS, "phone": "fax"}))
    with pytest.raises(BackendError, match="column missing"):
        backend.check()


def test_check_warns_when_the_dialect_is_wrong(people: tuple[Database, str]) -> None:
    db, table = people
    wrong = "sqlite" if db.dialect == "postgresql" else "postgresql"
    backend = make_backend({**people_source(db, table), "dialect": wrong})
    conn = backend._pool.take()[0]
    assert [w for w in backend._dbms_warnings(conn) if f"dialect: {wrong!r}" in w]
    backend.close()


# -- errors for staff never show the connection string -------------------------------


def test_missing_driver_is_named_and_the_password_is_not() -> None:
    backend = make_backend(
        {
            "backend": "odbc",
            "dialect": "mssql",
            "table": "customers",
            "connection": "Driver={No Such ODBC Driver 18};Server=db;UID=lookup;PWD=s3cr3t-pw;",
        }
    )
    with pytest.raises(BackendError) as caught:
        backend.check()
    message = str(caught.value)
    assert "'No Such ODBC Driver 18' is not installed" in message
    assert "s3cr3t-pw" not in message and "UID=lookup" not in message


def test_login_failure_is_reported_without_the_password() -> None:
    MARIADB.require()
    backend = make_backend(
        {
            "backend": "odbc",
            "dialect": "mysql",
            "table": "t",
            "connection": "Driver={MariaDB Unicode};Server=127.0.0.1;Port=3306;Database=test;"
            "Uid=lookup_nobody;Pwd=s3cr3t-pw;",
        }
    )
    with pytest.raises(BackendError, match="login failed") as caught:
        backend.find(ById("1"), 5)
    assert "s3cr3t-pw" not in str(caught.value)


def test_unreachable_server_is_a_clear_error() -> None:
    need_driver(POSTGRES)
    backend = make_backend(
        {
            "backend": "odbc",
            "dialect": "postgresql",
            "table": "t",
            "timeout": 2.0,
            "connection": "Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=1;Database=test;"
            "Uid=postgres;Pwd=s3cr3t-pw;",
        }
    )
    with pytest.raises(BackendError, match="cannot connect") as caught:
        backend.find(ById("1"), 5)
    assert "s3cr3t-pw" not in str(caught.value)


def need_driver(db: Database) -> None:
    """Skip (fail under CI) when the database's ODBC driver is missing."""
    from tests.support.requirements import need

    need(db.driver in pyodbc.drivers(), f"ODBC driver {db.driver!r} is not installed")


# -- query timeout inside the source's timeout ------------------------------------------


def test_login_and_query_timeouts_fit_inside_the_source_timeout() -> None:
    from lookup_plugins.odbc.backend import _timeouts

    for timeout in (2.5, 5.0, 10.0, 300.0):
        login, query = _timeouts(timeout)
        assert login >= 1 and login + query <= timeout


@pytest.mark.parametrize(
    "db,sleep",
    [(POSTGRES, "SELECT pg_sleep(10)::text, 'x'"), (MARIADB, "SELECT SLEEP(10), 'x'")],
    ids=["postgresql", "mysql"],
)
def test_slow_query_is_cancelled_by_the_database(db: Database, sleep: str) -> None:
    db.require()
    backend = make_backend(
        {
            "backend": "odbc",
            "dialect": db.dialect,
            "timeout": 1.0,
            "connection": db.connection,
            "table": "t",
            "queries": {"options": sleep},
        }
    )
    with pytest.raises(BackendTimeout):
        backend.find_options(OptionsQuery(), 5)
    backend.close()


# -- a query past the source's timeout is cancelled, and the source recovers ------------

#: Runs forever while the switch table says so; then answers ('ok', ...) at once.
RUNAWAY = {
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE "
    "(SELECT runaway FROM {switch}) = 1) SELECT 'ok', count(*) FROM c",
    "postgresql": "SELECT CASE WHEN (SELECT runaway FROM {switch}) = 1 "
    "THEN pg_sleep(60)::text ELSE 'ok' END, 'x'",
    "mysql": "SELECT IF((SELECT runaway FROM {switch}) = 1, SLEEP(60), 'ok'), 'x'",
}
#: Sessions still running the runaway query on the server.
STILL_RUNNING = {
    "postgresql": "SELECT COUNT(*) FROM pg_stat_activity WHERE state = 'active' "
    "AND query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()",
    "mysql": "SELECT COUNT(*) FROM information_schema.processlist "
    "WHERE info LIKE '%SLEEP(60)%' AND id <> CONNECTION_ID()",
}


def test_a_runaway_query_is_cancelled_and_the_source_recovers(database: Database) -> None:
    """SQLite's driver ignores the query timeout: only SQLCancel stops it."""
    switch = f"switch_{uuid.uuid4().hex[:10]}"
    with database.table(switch, f"{database.quote('runaway')} INTEGER", ["runaway"], [(1,)]):
        source = as_source(
            make_backend(
                {
                    "backend": "odbc",
                    "dialect": database.dialect,
                    "timeout": 1.0,
                    "connection": database.connection,
                    "table": "t",
                    "queries": {"options": RUNAWAY[database.dialect].format(switch=switch)},
                }
            )
        )
        hang_every_slot(source, lambda: source.options(OptionsQuery()))
        admin = database.connect()
        try:
            if database.dialect in STILL_RUNNING:  # cancelled on the server, not only here
                wait_for(
                    lambda: admin.execute(STILL_RUNNING[database.dialect]).fetchone()[0] == 0,
                    "the server stopped every runaway query",
                )
            admin.execute(f"UPDATE {switch} SET runaway = 0")
        finally:
            admin.close()
        assert [o.value for o in source.options(OptionsQuery())] == ["ok"]  # not "busy"
        source.backend.close()


# -- reconnect after the database dropped our connection --------------------------------

SESSION_ID = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}


@pytest.mark.parametrize("db", [POSTGRES, MARIADB], ids=["postgresql", "mysql"])
def test_reconnects_after_the_server_drops_every_connection(db: Database) -> None:
    db.require()
    with db.people_table() as table:
        backend = make_backend(people_source(db, table))
        held = [backend._pool.take()[0] for _ in range(3)]
        sessions = [int(conn.execute(SESSION_ID[db.dialect]).fetchone()[0]) for conn in held]
        for conn in held:
            backend._pool.give_back(conn)
        admin = db.connect()
        for session in sessions:  # what a database restart does to our pool
            if db.dialect == "mysql":
                admin.execute(f"KILL {session}")  # KILL takes no parameter marker
            else:
                admin.execute("SELECT pg_terminate_backend(?)", session).fetchall()
        wait_until_gone(admin, db, sessions)
        admin.close()
        assert ids(backend.find(ById("1001"), 5)) == ["1001"]  # no error for staff
        assert backend._pool.opened == len(sessions) + 1
        conn = backend._pool.take()[0]
        assert int(conn.execute(SESSION_ID[db.dialect]).fetchone()[0]) not in sessions
        backend._pool.give_back(conn)
        backend.close()


def wait_until_gone(admin: Any, db: Database, sessions: list[int]) -> None:
    """Wait (bounded) until the server no longer lists the killed sessions."""
    table, column = (
        ("pg_stat_activity", "pid")
        if db.dialect == "postgresql"
        else ("information_schema.processlist", "id")
    )
    marks = ", ".join("?" for _ in sessions)
    query = f"SELECT COUNT(*) FROM {table} WHERE {column} IN ({marks})"
    for _ in range(1000):
        if admin.execute(query, *sessions).fetchone()[0] == 0:
            return
    raise AssertionError(f"sessions {sessions} are still there")


# -- AJAX options: request fields bound by name ------------------------------------------


@pytest.fixture(scope="module")
def categories(database: Database) -> Iterator[tuple[Database, str]]:
    """A table of drop-down entries per HelpSpot category."""
    rows = [
        ("10", "Gold", "1"),
        ("11", "Gold 100%", "1"),
        ("12", "Silver", "1"),
        ("20", "Golden Gate", "2"),
        ("30", "O'Reilly", "1"),
    ]
    q = database.quote
    with database.table(
        f"opts_{uuid.uuid4().hex[:10]}",
        f"{q('code')} VARCHAR(20), {q('label')} VARCHAR(100), {q('category')} VARCHAR(20)",
        ["code", "label", "category"],
        rows,
    ) as name:
        yield database, name


def options_backend(db: Database, table: str) -> OdbcBackend:
    """A backend whose only query is the options query over ``table``."""
    q = DIALECTS[db.dialect].quote
    sql = (
        f"SELECT {q('code')}, {q('label')} FROM {q(table)} WHERE {q('category')} = "
        f":xCategory AND LOWER({q('label')}) LIKE :search_prefix ESCAPE '!' ORDER BY 1"
    )
    return make_backend(
        {
            "backend": "odbc",
            "dialect": db.dialect,
            "connection": db.connection,
            "table": table,
            "queries": {"options": sql},
        }
    )


def test_options_bind_request_fields_by_name(categories: tuple[Database, str]) -> None:
    backend = options_backend(*categories)
    found = backend.find_options(OptionsQuery("go", {"xCategory": "1"}), 10)
    assert [(o.value, o.description) for o in found] == [("10", "Gold"), ("11", "Gold 100%")]

    def values(search: str, category: str) -> list[str]:
        return [
            o.value for o in backend.find_options(OptionsQuery(search, {"xCategory": category}), 10)
        ]

    assert values("", "2") == ["20"]
    assert values("o'r", "1") == ["30"]


@pytest.mark.parametrize("search", ["%", "_", "' OR 1=1 --", "gold%", "[g]"])
def test_options_search_is_literal(categories: tuple[Database, str], search: str) -> None:
    backend = options_backend(*categories)
    found = backend.find_options(OptionsQuery(search, {"xCategory": "1 OR 1=1"}), 10)
    assert found == []


# -- generated SQL (no database needed) ---------------------------------------------------


@pytest.mark.parametrize(
    "dialect,expected",
    [
        ("mssql", "SELECT TOP (5) a FROM t"),
        ("postgresql", "SELECT a FROM t LIMIT 5"),
        ("mysql", "SELECT a FROM t LIMIT 5"),
        ("sqlite", "SELECT a FROM t LIMIT 5"),
    ],
)
def test_limits_are_in_the_sql(dialect: str, expected: str) -> None:
    assert DIALECTS[dialect].select("a", "FROM t", 5) == expected


@pytest.mark.parametrize(
    "dialect,expected",
    [
        ("mssql", "[dbo].[my table]"),
        ("postgresql", '"dbo"."my table"'),
        ("mysql", "`dbo`.`my table`"),
        ("sqlite", "`dbo`.`my table`"),
    ],
)
def test_identifiers_are_quoted(dialect: str, expected: str) -> None:
    assert DIALECTS[dialect].quote("dbo.my table") == expected


@pytest.mark.parametrize(
    "name", ["a]; DROP TABLE x", 'a"b', "a`b", "a;b", "a'b", "", "a..b", "1abc", "a/*", "a\x00b"]
)
def test_identifiers_from_config_are_validated(name: str) -> None:
    for dialect in DIALECTS.values():
        with pytest.raises(DialectError):
            dialect.quote(name)


def test_like_escaping_per_dialect() -> None:
    assert DIALECTS["mssql"].like_escape("a%b_c[d]!e") == "a!%b!_c![d]!!e"
    assert DIALECTS["postgresql"].like_escape("a%b_c[d]!e") == "a!%b!_c[d]!!e"


def test_sqlite_glob_folds_every_letter_and_quotes_wildcards() -> None:
    assert glob_pattern("Ün*?[", prefix=True) == "[Üü][Nn][*][?][[]*"
    assert glob_pattern("a]", prefix=False) == "[Aa]]"


def test_sql_text_does_not_depend_on_the_input(backend: OdbcBackend) -> None:
    plan = backend._plan
    for text in HOSTILE:
        for term, benign in (
            (ById(text), ById("x")),
            (ByEmail(text), ByEmail("x")),
            (ByName(text, text), ByName("x", "y")),
        ):
            statement, expected = plan.statement(term, 5), plan.statement(benign, 5)
            assert statement is not None and expected is not None
            assert statement.sql == expected.sql  # the input went into parameters only


def test_named_placeholders_skip_strings_comments_and_casts() -> None:
    parsed = parse_placeholders(
        "SELECT ':no', x::text, \"a:b\" -- :c\n FROM t /* :d */ "
        "WHERE a = :xCategory AND b = :search"
    )
    assert parsed.names == ("xCategory", "search")
    assert parsed.sql.count("?") == 2 and "x::text" in parsed.sql and "':no'" in parsed.sql


@pytest.mark.parametrize(
    "queries,message",
    [
        ({"options": "SELECT a, b FROM t WHERE c = :xNotAField"}, "unknown placeholder"),
        ({"options": "SELECT a, b FROM t WHERE c = ?"}, "placeholder"),
        ({"email": "SELECT * FROM t WHERE a = ? AND b = :email"}, "not both"),
        ({"name": "SELECT * FROM t WHERE a = ? AND b = ? AND c = ?"}, "at most 2"),
        ({"nickname": "SELECT 1"}, "unknown query"),
    ],
)
def test_bad_queries_are_config_errors(queries: dict[str, str], message: str) -> None:
    table = {
        "backend": "odbc",
        "dialect": "postgresql",
        "connection": "DSN=x",
        **({} if set(queries) - {"options"} else {"table": "t"}),
        "queries": queries,
    }
    with pytest.raises(ConfigError, match=message):
        make_backend(table)
    # a backend built by hand, past the config check, refuses every use the same way
    config = config_from_mapping(
        {
            "sources": {
                "people": {
                    "backend": "odbc",
                    "dialect": "mssql",
                    "connection": "DSN=x",
                    "table": "t",
                }
            }
        },
        Path.cwd(),
    )
    settings = config.sources["people"].settings
    backend = OdbcBackend(
        config.sources["people"].options.__class__(
            connection=config.sources["people"].options.connection,
            dialect="postgresql",
            table=table.get("table"),
            queries=queries,
        ),
        settings,
    )
    for use in (
        backend.check,
        backend.prepare,
        lambda: backend.find(ById("1"), 5),
        lambda: backend.find_options(OptionsQuery(), 5),
    ):
        with pytest.raises(BackendError, match=message):
            use()


def test_bad_queries_are_reported_when_the_config_loads(tmp_path: Path) -> None:
    raw = {
        "sources": {
            "people": {
                "backend": "odbc",
                "dialect": "mssql",
                "connection": "DSN=x",
                "queries": {"fax": "SELECT 1"},
            }
        }
    }
    with pytest.raises(ConfigError, match=r"sources\.people\.queries\.fax: unknown query"):
        config_from_mapping(raw, tmp_path)


@pytest.mark.parametrize(
    "table",
    [
        {"table": "t", "queries": {"email": "SELECT 1 WHERE ? = 1"}},
        {},
        {"table": "t", "preset": "adsi", "adsi_base": "LDAP://DC=example,DC=com"},
    ],
)
def test_exactly_one_mode_is_required(table: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"sources\.people: set exactly one of"):
        make_backend({"backend": "odbc", "dialect": "mssql", "connection": "DSN=x", **table})


# -- the OPENQUERY(ADSI) preset: input cannot leave its string ----------------------------


def tsql_literals(sql: str) -> list[str]:
    """Every T-SQL string literal in ``sql``, unescaped ('' -> ')."""
    return [m.replace("''", "'") for m in re.findall(r"'((?:[^']|'')*)'", sql)]


def adsi_shape(sql: str) -> tuple[str, list[str]]:
    """The T-SQL outside literals, and the ADSI query's own text outside its literals."""
    outer = re.sub(r"'(?:[^']|'')*'", "''", sql)
    (inner,) = tsql_literals(sql)
    return outer, [re.sub(r"'(?:[^']|'')*'", "''", inner), *tsql_literals(inner)]


ADSI_ATTRS = ["sAMAccountName", "givenName", "sn", "mail", "telephoneNumber"]


@pytest.mark.parametrize(
    "value",
    [
        "O'Brien",
        "o''b",
        "a'' OR ''1''=''1",
        "x') --",
        "Núñez",
        "'; EXEC xp_cmdshell 'dir'; --",
        "''''",
        "d'Arcy-Smith",
    ],
)
def test_adsi_values_stay_inside_their_string(value: str) -> None:
    if not adsi_allowed(value):
        assert not re.fullmatch(r"[\w .@+'-]*", value)
        return
    sql = adsi_query("ADSI", "LDAP://DC=example,DC=com", ADSI_ATTRS, [("sn", value, True)])
    benign = adsi_query("ADSI", "LDAP://DC=example,DC=com", ADSI_ATTRS, [("sn", "x", True)])
    outer, (inner, *literals) = adsi_shape(sql)
    benign_outer, (benign_inner, *_) = adsi_shape(benign)
    assert (outer, inner) == (benign_outer, benign_inner)  # same statement, same literals
    assert literals[-1] == value + "*"  # holding exactly the value, searched as a prefix


@pytest.mark.parametrize(
    "value",
    [
        "*",
        "a*b",
        "(",
        ")",
        "a,b",
        "a;b",
        "\x00",
        "a\nb",
        "\\",
        "]",
        "[",
        "%",
        "a" * 200,
        '"',
        "a=b",
        "<",
        "|",
        "&",
    ],
)
def test_adsi_rejects_everything_outside_the_allow_list(value: str) -> None:
    assert not adsi_allowed(value)
    with pytest.raises(DialectError):
        adsi_query("ADSI", "LDAP://DC=example,DC=com", ADSI_ATTRS, [("sn", value, False)])


def test_adsi_preset_finds_nobody_for_disallowed_input() -> None:
    backend = make_backend(
        {
            "backend": "odbc",
            "dialect": "mssql",
            "connection": "DSN=x",
            "preset": "adsi",
            "adsi_base": "LDAP://DC=example,DC=com",
        }
    )
    assert backend.find(ByName("Smith*"), 5) == []  # no connection attempted
    statement = backend._plan.statement(ByName("O'Brien", "Seán"), 5)
    assert statement is not None and statement.params == ()
    assert statement.sql.startswith("SELECT TOP (5) * FROM (SELECT sAMAccountName, givenName")
    assert "sn = ''O''''Brien*''" in statement.sql
    assert "OPENQUERY([ADSI], 'SELECT" in statement.sql


def test_adsi_preset_needs_mssql_and_a_base() -> None:
    with pytest.raises(ConfigError, match=r"sources\.people\.preset: the adsi preset needs"):
        make_backend(
            {
                "backend": "odbc",
                "dialect": "postgresql",
                "connection": "DSN=x",
                "preset": "adsi",
                "adsi_base": "LDAP://DC=example,DC=com",
            }
        )
    with pytest.raises(ConfigError, match=r"sources\.people\.preset: .* not an LDAP:// or GC://"):
        make_backend(
            {
                "backend": "odbc",
                "dialect": "mssql",
                "connection": "DSN=x",
                "preset": "adsi",
                "adsi_base": "LDAP://x') --",
            }
        )
