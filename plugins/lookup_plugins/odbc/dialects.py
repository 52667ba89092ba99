"""SQL text for the ODBC backend: per-dialect quoting, limits, matching, placeholders.

Nothing here touches a database. Every value a user typed travels as a bound
``?`` parameter; SQL text is built only from configuration (identifiers,
validated and quoted here, and the admin's own queries) and whole numbers
(limits). The one exception, the OPENQUERY(ADSI) preset, cannot bind
parameters at all; see :func:`adsi_query`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from lookup_server.plugin import (
    PHONE_SUFFIX_DIGITS,
    ByEmail,
    ById,
    ByName,
    ByPhone,
    OptionsQuery,
    SearchTerm,
    SourceSettings,
)

#: The LIKE escape character. Not a backslash: MySQL would read ``'\'`` as the
#: start of an escape sequence inside ``ESCAPE '\'``.
LIKE_ESCAPE = "!"
ESCAPE_CLAUSE = f"ESCAPE '{LIKE_ESCAPE}'"

#: Identifier parts from config: letters, digits, ``_``, ``$``, ``#``, ``-`` and
#: spaces. Quoting alone would be safe; the allow-list also stops pasted SQL
#: (``name; DROP ...``) and typos from reaching the database at all.
_IDENTIFIER = re.compile(r"[^\W\d][\w$# -]*\Z")


class DialectError(ValueError):
    """A configured identifier or query cannot be used safely."""


@dataclass(frozen=True)
class Dialect:
    """How one database family spells limits, identifiers and case-insensitive matches."""

    name: str
    open_quote: str
    close_quote: str
    #: SQL Server's LIKE treats ``[`` as the start of a character class.
    like_brackets: bool = False
    #: An expression template that strips every non-digit, or "" when the
    #: database has no regular expressions (then a looser LIKE finds candidates).
    digits_template: str = ""

    def quote(self, name: str) -> str:
        """A validated, quoted identifier; ``schema.table`` quotes each part."""
        parts = name.split(".")
        for part in parts:
            if not _IDENTIFIER.match(part):
                raise DialectError(
                    f"{name!r} is not a plain identifier (letters, digits, _ $ # - and spaces)"
                )
        close = self.close_quote
        return ".".join(f"{self.open_quote}{p.replace(close, close * 2)}{close}" for p in parts)

    def select(self, columns: str, rest: str, limit: int) -> str:
        """``SELECT columns rest`` returning at most ``limit`` rows."""
        n = _whole(limit)
        if self.name == "mssql":
            return f"SELECT TOP ({n}) {columns} {rest}"
        return f"SELECT {columns} {rest} LIMIT {n}"

    def wrap(self, query: str, limit: int) -> str:
        """An admin's whole query, limited to ``limit`` rows in SQL."""
        return self.select("*", f"FROM ({strip_query(query)}) lookup_q", limit)

    def folded(self, column: str) -> str:
        """``column`` lower-cased so that non-ASCII letters compare exactly, too."""
        if self.name == "mysql":
            # The column's own collation may be accent-insensitive or not even
            # Unicode; compare lower-cased UTF-8 code points instead.
            return f"LOWER(CONVERT({column} USING utf8mb4)) COLLATE utf8mb4_bin"
        return f"LOWER({column})"

    def matches(self, column: str, text: str, prefix: bool) -> tuple[str, str]:
        """Condition and parameter: ``column`` equals (or starts with) ``text``, any case."""
        if self.name == "sqlite":
            # SQLite's LOWER() and LIKE fold ASCII only; a GLOB with both cases
            # of every letter is exact for accented letters as well.
            return f"{column} GLOB ?", glob_pattern(text, prefix)
        pattern = self.like_escape(text.lower()) + ("%" if prefix else "")
        return f"{self.folded(column)} LIKE ? {ESCAPE_CLAUSE}", pattern

    def like_escape(self, text: str) -> str:
        """``text`` with every LIKE wildcard (and the escape character) made literal."""
        specials = LIKE_ESCAPE + "%_" + ("[" if self.like_brackets else "")
        return "".join(LIKE_ESCAPE + c if c in specials else c for c in text)

    def phone_candidates(self, column: str, digits: str) -> tuple[str, str]:
        """Condition and parameter finding every number phone_matches() could accept."""
        tail = digits[-PHONE_SUFFIX_DIGITS:]
        if self.digits_template:
            stripped = self.digits_template.format(column)
            if len(digits) < PHONE_SUFFIX_DIGITS:
                return f"{stripped} = ?", digits
            return f"{stripped} LIKE ?", "%" + tail
        return f"{column} LIKE ?", phone_like(tail)


DIALECTS: Mapping[str, Dialect] = {
    "mssql": Dialect("mssql", "[", "]", like_brackets=True),
    "postgresql": Dialect(
        "postgresql", '"', '"', digits_template="regexp_replace({}, '[^0-9]+', '', 'g')"
    ),
    "mysql": Dialect("mysql", "`", "`", digits_template="REGEXP_REPLACE({}, '[^0-9]+', '')"),
    # Not "double quotes": SQLite reads an unknown "column" as a string literal.
    "sqlite": Dialect("sqlite", "`", "`"),
}


def _whole(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DialectError(f"a row limit must be a positive whole number, not {n!r}")
    return n


def strip_query(query: str) -> str:
    """An admin's query without trailing whitespace and semicolons."""
    return query.strip().rstrip(";").rstrip()


def phone_like(digits: str) -> str:
    """A LIKE pattern matching any text holding ``digits`` in order, whatever between."""
    return "%" + "%".join(digits) + "%"


def glob_pattern(text: str, prefix: bool) -> str:
    """A case-insensitive SQLite GLOB pattern matching ``text`` literally."""
    out = []
    for char in text:
        cases = {char, char.lower(), char.upper()}
        cases = {c for c in cases if len(c) == 1}
        if char in "*?[":
            out.append(f"[{char}]")
        elif len(cases) > 1:
            out.append("[" + "".join(sorted(cases)) + "]")
        else:
            out.append(char)
    return "".join(out) + ("*" if prefix else "")


# -- named placeholders ----------------------------------------------------------

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Placeholders:
    """A query with ``:name`` placeholders turned into ``?`` and the names in order."""

    sql: str
    names: tuple[str, ...]
    positional: int

    def bind(self, values: Mapping[str, str]) -> tuple[str, ...]:
        """The parameter tuple for these names (missing values bind as "")."""
        return tuple(values.get(name, "") for name in self.names)


def parse_placeholders(sql: str, brackets: bool = False) -> Placeholders:
    """Find ``:name`` and ``?`` outside quotes and comments; ``::`` casts stay."""
    out: list[str] = []
    names: list[str] = []
    positional = 0
    i = 0
    closers = {"'": "'", '"': '"', "`": "`"}
    if brackets:
        closers["["] = "]"
    while i < len(sql):
        char = sql[i]
        if char in closers:
            end = sql.find(closers[char], i + 1)
            end = len(sql) if end < 0 else end + 1
            out.append(sql[i:end])
            i = end
        elif sql.startswith("--", i) or sql.startswith("/*", i):
            end = sql.find("\n" if char == "-" else "*/", i + 2)
            end = len(sql) if end < 0 else end + (1 if char == "-" else 2)
            out.append(sql[i:end])
            i = end
        elif sql.startswith("::", i):
            out.append("::")
            i += 2
        elif char == ":" and (match := _NAME.match(sql, i + 1)):
            names.append(match.group())
            out.append("?")
            i = match.end()
        else:
            positional += char == "?"
            out.append(char)
            i += 1
    return Placeholders("".join(out), tuple(names), positional)


# -- the OPENQUERY(ADSI) preset ----------------------------------------------------

#: What an Active Directory search value may contain: letters (any script),
#: digits, space and . @ - _ + ' . No ``*`` (ADSI's wildcard), no parentheses,
#: no commas, no control characters.
ADSI_VALUE = re.compile(r"[^\W]|[ .@\-+']", re.UNICODE)
ADSI_MAX = 128
#: Default attribute for each livelookup element (the HelpSpot manual's sample).
ADSI_FIELDS: Mapping[str, str] = {
    "customer_id": "sAMAccountName",
    "first_name": "givenName",
    "last_name": "sn",
    "email": "mail",
    "phone": "telephoneNumber",
}
_ADSI_ATTRIBUTE = re.compile(r"[A-Za-z][A-Za-z0-9-]*\Z")
_ADSI_BASE = re.compile(r"(LDAP|GC)://[\w .=,-]+\Z")


def adsi_allowed(value: str) -> bool:
    """True when ``value`` holds only characters the ADSI preset may search for."""
    return len(value) <= ADSI_MAX and all(ADSI_VALUE.fullmatch(c) for c in value)


def adsi_literal(value: str, prefix: bool = False) -> str:
    """An ADSI SQL string literal for an allowed value (quotes doubled, ``*`` for a prefix)."""
    if not adsi_allowed(value):
        raise DialectError("value holds characters the ADSI preset does not search for")
    return "'" + value.replace("'", "''") + ("*" if prefix else "") + "'"


def adsi_query(
    linked_server: str,
    base: str,
    attributes: Sequence[str],
    conditions: Sequence[tuple[str, str, bool]],
) -> str:
    """``SELECT ... FROM OPENQUERY(server, '...')`` for (attribute, value, prefix) conditions.

    OPENQUERY takes only a literal string, so values are embedded: each must
    pass :func:`adsi_allowed`, its quotes are doubled for ADSI's own SQL, and
    then every quote of the whole ADSI query is doubled again for T-SQL.
    """
    if not _ADSI_BASE.match(base):
        raise DialectError(f"{base!r} is not an LDAP:// or GC:// path")
    for attribute in [*attributes, *(c[0] for c in conditions)]:
        if not _ADSI_ATTRIBUTE.match(attribute):
            raise DialectError(f"{attribute!r} is not an Active Directory attribute name")
    where = " AND ".join(
        ["objectCategory = 'Person'", "objectClass = 'user'"]
        + [
            f"{attribute} = {adsi_literal(value, prefix)}"
            for attribute, value, prefix in conditions
        ]
    )
    inner = f"SELECT {', '.join(attributes)} FROM '{base}' WHERE {where}"
    server = DIALECTS["mssql"].quote(linked_server)
    literal = inner.replace("'", "''")
    return f"SELECT {', '.join(attributes)} FROM OPENQUERY({server}, '{literal}')"


# -- plans: which statement answers which search term ---------------------------------


@dataclass(frozen=True)
class Statement:
    """One query to run: SQL with ``?`` markers, its parameters, and how to read rows."""

    sql: str
    params: tuple[str, ...] = ()
    #: Rows to fetch at most (the SQL limit too).
    fetch: int = 1
    #: The element each result column feeds; None: the columns' own names.
    elements: tuple[str, ...] | None = None
    #: Keep only rows whose phone element phone_matches() these digits.
    phone: str = ""
    #: Keep only rows whose customer_id is exactly this (case-insensitive collations).
    exact_id: str = ""


#: Candidate rows fetched per wanted row when SQL only narrows phone numbers down.
PHONE_WINDOW = 20
DEFAULT_ELEMENTS = ("customer_id", "first_name", "last_name", "email", "phone")
STRATEGY_KEYS: Mapping[type, str] = {
    ById: "customer_id",
    ByEmail: "email",
    ByPhone: "phone",
    ByName: "name",
}
#: What a strategy query's ``?`` markers receive, in order.
POSITIONAL: Mapping[str, tuple[str, ...]] = {
    "customer_id": ("customer_id",),
    "email": ("email_lower",),
    "phone": ("phone_pattern",),
    "name": ("last_name_prefix", "first_name_prefix"),
}
STRATEGY_NAMES = frozenset(
    {
        "customer_id",
        "email",
        "email_lower",
        "phone",
        "phone_digits",
        "phone_pattern",
        "last_name",
        "first_name",
        "last_name_prefix",
        "first_name_prefix",
    }
)
#: Names an options query may use: HelpSpot's AJAX parameters (HELPSPOT.md §4) and
#: the typed text as ``search`` / ``search_prefix`` / ``search_contains``.
OPTION_NAME = re.compile(
    r"(sUserId|sFirstName|sLastName|sEmail|sPhone|xStatus|xCategory|xPersonAssignedTo"
    r"|Custom[0-9]+|callingField|search|search_prefix|search_contains"
    r"|acting_person_(xperson|fusertype|fname|lname|email))\Z"
)


def probe_terms() -> list[SearchTerm]:
    """Terms with empty input, for ``lookup-server check``."""
    return [ById(""), ByEmail(""), ByPhone("0"), ByName("", "")]


class TablePlan:
    """Simple mode: one table or view, its columns named by the source's ``fields``."""

    def __init__(self, dialect: Dialect, table: str, source: SourceSettings) -> None:
        self.dialect = dialect
        elements = list(source.fields) or list(DEFAULT_ELEMENTS)
        if "customer_id" not in elements:
            elements.insert(0, "customer_id")
        self.elements = tuple(elements)
        self._col = {
            e: dialect.quote(source.backend_field(e)) for e in (*elements, *DEFAULT_ELEMENTS)
        }
        self._head = ", ".join(self._col[e] for e in elements)
        self._from = f"FROM {dialect.quote(table)}"

    def statement(self, term: SearchTerm, limit: int) -> Statement | None:
        """The statement answering ``term`` with at most ``limit`` rows."""
        col, d, fetch, phone, exact = self._col, self.dialect, limit, "", ""
        params: tuple[str, ...]
        if isinstance(term, ById):
            where, params = f"{col['customer_id']} = ?", (term.customer_id,)
            exact = term.customer_id
        elif isinstance(term, ByEmail):
            cond, value = d.matches(col["email"], term.address, prefix=False)
            where, params = cond, (value,)
        elif isinstance(term, ByPhone):
            cond, value = d.phone_candidates(col["phone"], term.digits)
            where, params, phone, fetch = cond, (value,), term.digits, limit * PHONE_WINDOW
        else:
            conds = [d.matches(col["last_name"], term.last, prefix=True)]
            if term.first:
                conds.append(d.matches(col["first_name"], term.first, prefix=True))
            where, params = " AND ".join(c for c, _ in conds), tuple(v for _, v in conds)
        rest = f"{self._from} WHERE {where} ORDER BY {col['customer_id']}"
        return Statement(
            d.select(self._head, rest, fetch), params, fetch, self.elements, phone, exact
        )


def term_values(term: SearchTerm, dialect: Dialect) -> dict[str, str]:
    """Every named value a strategy query may bind for ``term``."""
    if isinstance(term, ById):
        return {"customer_id": term.customer_id}
    if isinstance(term, ByEmail):
        return {"email": term.address, "email_lower": term.address.lower()}
    if isinstance(term, ByPhone):
        return {
            "phone": term.digits,
            "phone_digits": term.digits,
            "phone_pattern": phone_like(term.digits[-PHONE_SUFFIX_DIGITS:]),
        }
    return {
        "last_name": term.last,
        "first_name": term.first,
        "last_name_prefix": dialect.like_escape(term.last.lower()) + "%",
        "first_name_prefix": dialect.like_escape(term.first.lower()) + "%",
    }


class QueryPlan:
    """Queries mode: the admin's own statement per strategy, limited by wrapping it."""

    def __init__(self, dialect: Dialect, queries: Mapping[str, str]) -> None:
        self.dialect = dialect
        self.queries: dict[str, Placeholders] = {}
        for key, sql in queries.items():
            if key == "options":
                continue
            parsed = parse_placeholders(sql, dialect.like_brackets)
            _check_placeholders(key, parsed, STRATEGY_NAMES.__contains__, POSITIONAL[key])
            self.queries[key] = parsed

    def statement(self, term: SearchTerm, limit: int) -> Statement | None:
        """The configured statement for ``term``'s strategy, or None when there is none."""
        key = STRATEGY_KEYS[type(term)]
        parsed = self.queries.get(key)
        if parsed is None:
            return None
        values = term_values(term, self.dialect)
        names = parsed.names or POSITIONAL[key][: parsed.positional]
        params = tuple(values.get(name, "") for name in names)
        phone = term.digits if isinstance(term, ByPhone) else ""
        fetch = limit * PHONE_WINDOW if phone else limit
        return Statement(self.dialect.wrap(parsed.sql, fetch), params, fetch, None, phone)


def options_statement(
    dialect: Dialect, parsed: Placeholders, query: OptionsQuery, limit: int
) -> Statement:
    """The options query for one AJAX request, its ``:name`` markers bound in order."""
    search = query.search
    values = {
        **query.fields,
        "callingField": search,
        "search": search,
        "search_prefix": dialect.like_escape(search.lower()) + "%",
        "search_contains": "%" + dialect.like_escape(search.lower()) + "%",
    }
    return Statement(dialect.wrap(parsed.sql, limit), parsed.bind(values), limit)


def parse_options_query(dialect: Dialect, sql: str) -> Placeholders:
    """The options query, its placeholder names checked."""
    parsed = parse_placeholders(sql, dialect.like_brackets)
    _check_placeholders("options", parsed, lambda n: bool(OPTION_NAME.match(n)), ())
    return parsed


def _check_placeholders(
    key: str, parsed: Placeholders, known: Callable[[str], bool], positional: tuple[str, ...]
) -> None:
    if parsed.names and parsed.positional:
        raise DialectError(f"{key}: use either ? or :name placeholders, not both")
    unknown = [n for n in parsed.names if not known(n)]
    if unknown:
        raise DialectError(f"{key}: unknown placeholder :{unknown[0]}")
    if parsed.positional > len(positional):
        raise DialectError(
            f"{key}: at most {len(positional)} ? placeholder(s); use :name placeholders for more"
        )


class AdsiPlan:
    """The OPENQUERY(ADSI, ...) preset from HelpSpot's manual; input is allow-listed."""

    def __init__(
        self, dialect: Dialect, linked_server: str, base: str, attrs: Mapping[str, str]
    ) -> None:
        self.dialect = dialect
        self.server = linked_server
        self.base = base
        self.elements = tuple(attrs)
        self.attributes = tuple(attrs.values())
        self.statement(ById("probe"), 1)  # validates base, server and attribute names now

    def statement(self, term: SearchTerm, limit: int) -> Statement | None:
        """The OPENQUERY for ``term``, or None when its input cannot be searched safely."""
        attr = dict(zip(self.elements, self.attributes, strict=True))
        if isinstance(term, ById):
            conds = [(attr["customer_id"], term.customer_id, False)]
        elif isinstance(term, ByEmail):
            conds = [(attr["email"], term.address, False)]
        elif isinstance(term, ByName):
            conds = [(attr["last_name"], term.last, True)]
            if term.first:
                conds.append((attr["first_name"], term.first, True))
        else:
            return None  # AD keeps phone numbers free-form; no wildcard can narrow them
        if not all(adsi_allowed(value) for _, value, _ in conds):
            return None
        sql = adsi_query(self.server, self.base, self.attributes, conds)
        return Statement(self.dialect.wrap(sql, limit), (), limit, self.elements)
