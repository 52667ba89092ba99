r"""Active Directory / OpenLDAP backend: people from a directory, through ldap3.

Every sample Live Lookup script binds once per lookup; that costs a TCP (and
TLS) handshake plus a bind each time. Here each backend keeps a small pool of
bound connections, each used by one thread at a time, and replaces one the
server dropped by reconnecting (trying the URLs in order) and retrying once.

Every value that enters a filter is escaped with ldap3's RFC 4515 escaping, so
``*``, ``(``, ``)``, ``\`` and NUL in input only ever match literally.

ldap3's receive timeout bounds each read, not an answer: a directory that sends
a byte now and then held the thread for good. So connecting, binding and every
search run under :func:`abort_on_timeout`, which shuts the connection's socket
down at the source's timeout (``unbind`` would wait for ldap3's connection lock,
held by the blocked search); that connection is then dropped, never pooled.
"""

from __future__ import annotations

import contextlib
import re
import ssl
import struct
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import ldap3
from ldap3.core import exceptions as lx
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from lookup_server.plugin import (
    INSERTABLE_FIELDS,
    MIN_NAME_PREFIX,
    PHONE_SUFFIX_DIGITS,
    BackendError,
    BackendTimeout,
    ByEmail,
    ById,
    ByName,
    ByPhone,
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
    is_insertable,
    phone_matches,
    shut_down,
    timed_out,
)

from ..mirror.child import rebuilt_mirror
from ..mirror.local import Mirror
from ..mirror.settings import mirror_problems, mirror_settings

T = TypeVar("T")
Entry = dict[str, list[bytes]]  # lower-case attribute name -> raw values

#: Idle bound connections kept per backend (busier moments open temporary ones).
POOL_SIZE = 8
#: Entries per page when a search is filtered again here (phone, exact id).
PAGE_SIZE = 200
#: Idle connections older than this are closed rather than re-used (seconds).
MAX_IDLE = 240.0
#: A URL that failed is tried after the others for this long.
QUARANTINE = 30.0
#: Values longer than this are not something to show in HelpSpot.
MAX_VALUE_BYTES = 4096
#: Large binaries that are never requested, whatever ``fields`` says.
NEVER_FETCHED = frozenset(
    {
        "thumbnailphoto",
        "jpegphoto",
        "photo",
        "usercertificate",
        "usersmimecertificate",
        "audio",
        "userpkcs12",
        "msexchsafesenderhash",
        "msexchblockedsendershash",
    }
)
#: AD's LDAP_MATCHING_RULE_BIT_AND: userAccountControl bit 2 is ACCOUNTDISABLE.
AD_DISABLED = "(userAccountControl:1.2.840.113556.1.4.803:=2)"
_CODE_NO_SUCH_OBJECT, _CODE_BAD_CREDENTIALS = 32, 49
_OK_CODES = {0, 4}  # success, sizeLimitExceeded (we asked for a limit)
_PAGED = "1.2.840.113556.1.4.319"
_DN_ESCAPE = re.compile(rb"\\([0-9A-Fa-f]{2}|.)", re.DOTALL)


@dataclass(frozen=True)
class LdapOptions:
    """Keys of a ``backend = "ldap"`` source."""

    url: list[str]
    bind_dn: str
    password: Secret
    base_dn: str
    preset: Literal["active_directory", "openldap"]
    ca_file: Path | None = None
    start_tls: bool = False
    #: Replaces the preset's person filter, e.g. "(&(objectClass=user)(memberOf=...))".
    user_filter: str = ""
    #: Active Directory only: leave out accounts with ACCOUNTDISABLE set.
    exclude_disabled: bool = True
    #: Most entries one search may read from the directory.
    size_limit: int = 1000
    #: Answer every lookup from a local copy refreshed this often ("5m", "1h").
    mirror: str = ""
    #: How old that copy may grow before lookups are errors (default 1 d).
    mirror_max_age: str = ""
    #: Where the copy lives (default: a folder of the user's state folder).
    mirror_path: Path | None = None


@dataclass(frozen=True)
class Preset:
    """Defaults for one kind of directory."""

    person_filter: str
    #: element -> attribute spec: ``attr``, ``attr[N]``, ``attr:cn``, ``attr:smtp``,
    #: ``attr>other`` (follow the DN in attr), alternatives joined by ``|``.
    elements: dict[str, str]
    email_attributes: tuple[str, ...] = ()
    disabled_filter: str = ""


PRESETS = {
    "active_directory": Preset(
        "(&(objectCategory=person)(objectClass=user))",
        {
            "customer_id": "sAMAccountName",
            "first_name": "givenName",
            "last_name": "sn",
            "email": "mail|proxyAddresses:smtp",
            "phone": "telephoneNumber|mobile",
            "title": "title",
            "department": "department",
            "company": "company",
            "manager": "manager>displayName|manager:cn",
        },
        email_attributes=("proxyAddresses",),
        disabled_filter=AD_DISABLED,
    ),
    "openldap": Preset(
        "(objectClass=inetOrgPerson)",
        {
            "customer_id": "uid",
            "first_name": "givenName",
            "last_name": "sn",
            "email": "mail",
            "phone": "telephoneNumber|mobile",
            "title": "title",
            "manager": "manager>displayName|manager:cn",
        },
    ),
}


@dataclass(frozen=True)
class Spec:
    """Where one element's value comes from."""

    attribute: str
    index: int | None = None
    transform: Literal["", "cn", "smtp"] = ""
    follow: str = ""

    @classmethod
    def parse(cls, text: str) -> Spec:
        """``mail``, ``mail[1]``, ``memberOf:cn``, ``proxyAddresses:smtp``, ``manager>cn``."""
        attribute, _, follow = text.strip().partition(">")
        attribute, _, transform = attribute.partition(":")
        index = None
        if attribute.endswith("]") and "[" in attribute:
            attribute, _, number = attribute[:-1].partition("[")
            index = int(number) if number.isdigit() else -1
        if not attribute or transform not in ("", "cn", "smtp") or index == -1:
            raise ValueError(f"cannot read attribute spec {text!r}")
        return cls(attribute, index, transform, follow)  # type: ignore[arg-type]


@dataclass
class _Plan:
    """The filter of one search and what to check on each entry it returns."""

    clause: str
    #: A second look at each entry, when the filter can only narrow the candidates.
    keep: Callable[[Entry], bool] | None = None
    #: Candidates may be many more than the matches: read them page by page.
    paged: bool = False


class LdapBackend(SourceBackend[LdapOptions]):
    """Customers and AJAX options from Active Directory or another LDAP directory."""

    Options = LdapOptions

    def __init__(self, options: LdapOptions, source: SourceSettings) -> None:
        super().__init__(options, source)
        self.preset = PRESETS[options.preset]
        self.elements = self._element_specs()
        self.person_filter = _wrap(options.user_filter) or self.preset.person_filter
        if options.preset == "active_directory" and options.exclude_disabled:
            self.person_filter = f"(&{self.person_filter}(!{self.preset.disabled_filter}))"
        self.attributes = sorted(
            {
                s.attribute
                for specs in self.elements.values()
                for s in specs
                if s.attribute.lower() not in NEVER_FETCHED
            }
        )
        self.connect_timeout = source.timeout / (2 * max(1, len(options.url)))
        self.receive_timeout = max(1, int(source.timeout / 3))  # ldap3 wants whole seconds
        self.page_size = PAGE_SIZE
        self._ca_file = str(options.ca_file) if options.ca_file else None
        self._down: dict[int, float] = {}  # URL index -> tried last until then
        self._pool: ConnectionPool[Any] = ConnectionPool(
            self._connect, _unbind, POOL_SIZE, max_idle=MAX_IDLE
        )
        self.mirror = self._mirror() if options.mirror else None
        if self.mirror is not None:
            # lookups read the local copy (microseconds): no thread hand-off, no deadline
            self.waits_on_network = False

    @classmethod
    def validate(cls, options: LdapOptions, source: SourceSettings) -> list[tuple[str, str]]:
        """A mirror's interval and age limit."""
        return mirror_problems(options.mirror, options.mirror_max_age)

    def _mirror(self) -> Mirror:
        from .mirror_feed import LdapMirrorFeed  # only mirrored sources need it

        o = self.options
        feed = LdapMirrorFeed(self)
        identity = " ".join([*o.url, o.bind_dn, feed.signature()])
        settings = mirror_settings(
            self.source.name, o.mirror, o.mirror_max_age, o.mirror_path, identity
        )
        rebuild = partial(rebuilt_mirror, type(self), self.options, self.source)
        return Mirror(settings, feed, self.source, rebuild)

    def _element_specs(self) -> dict[str, tuple[Spec, ...]]:
        merged = {**self.preset.elements, **self.source.fields}
        specs: dict[str, tuple[Spec, ...]] = {}
        for element, text in merged.items():
            if not text:
                continue  # fields = { manager = "" } drops a preset element
            try:
                specs[element] = tuple(Spec.parse(part) for part in text.split("|"))
            except ValueError as exc:
                raise BackendError(f"fields.{element}: {exc}") from None
        return specs

    # -- life cycle ------------------------------------------------------------------

    def prepare(self) -> None:
        """Open the first pooled connection so the first lookup does not pay for it.

        A mirrored source opens its copy instead, making the first one if there is none.
        """
        if self.mirror is not None:
            self.mirror.prepare()
            return
        self._pool.give_back(self._connect())

    def start_background(self, submit: WebhookSubmitter) -> None:
        """A mirrored source refreshes its copy in the background."""
        if self.mirror is not None:
            self.mirror.start()

    def status(self) -> list[str]:
        """A mirror's age and last refresh."""
        return self.mirror.describe() if self.mirror is not None else []

    def check(self) -> list[str]:
        """Bind to every URL and probe base_dn and the person filter (and a mirror's age)."""
        if self.mirror is not None:
            return self.mirror.check(self._check_directory)
        return self._check_directory()

    def _check_directory(self) -> list[str]:
        warnings = [
            f"fields.{e}: {s.attribute} is a photo or certificate and is never shown"
            for e, specs in self.elements.items()
            for s in specs
            if s.attribute.lower() in NEVER_FETCHED
        ]
        for url in self.options.url:
            if url.lower().startswith("ldap://") and not self.options.start_tls:
                warnings.append(
                    f"{url}: the password travels unencrypted; use ldaps:// or start_tls = true"
                )
        conns, errors = [], []
        for url in self.options.url:
            try:
                conns.append(self._connect_to(url))
            except BackendError as exc:
                errors.append(exc)
        if not conns:
            raise _combined(errors)
        warnings += [f"failover URL unusable: {error}" for error in errors]
        try:
            found = self._attempt(
                conns.pop(0),
                lambda conn: self._search(conn, self.person_filter, ["objectClass"], 1),
            )
        finally:
            for conn in conns:
                _unbind(conn)
        if not found:
            warnings.append(
                f"no entry under base_dn matches the person filter {self.person_filter}"
            )
        return warnings

    def close(self) -> None:
        """Unbind every pooled connection; stop a mirror's refreshes."""
        if self.mirror is not None:
            self.mirror.close()
        self._pool.flush()

    # -- capabilities ------------------------------------------------------------------

    def find(self, term: SearchTerm, limit: int) -> Sequence[Customer]:
        """People matching one search term (from the mirror, when there is one)."""
        if self.mirror is not None:
            return self.mirror.find(term, limit)
        plan = self._plan(term)
        if plan is None:
            return []
        wanted = f"(&{self.person_filter}{plan.clause})"
        return self._run(lambda conn: self._customers(conn, wanted, plan, limit))

    def find_options(self, query: OptionsQuery, limit: int) -> Sequence[Option]:
        """People whose name, id or e-mail starts with what staff typed."""
        text = query.search.strip()
        if len(text) < MIN_NAME_PREFIX:
            return []
        prefix = escape_filter_chars(text) + "*"
        names = [self._attribute(e) for e in ("last_name", "first_name", "customer_id", "email")]
        clause = "(|" + "".join(f"({a}={prefix})" for a in [*names, "displayName"] if a) + ")"
        plan = _Plan(clause)
        found = self._run(
            lambda conn: self._customers(conn, f"(&{self.person_filter}{clause})", plan, limit)
        )
        return sorted(
            (Option(c.customer_id, _describe(c)) for c in found),
            key=lambda o: o.description.casefold(),
        )

    # -- searches ------------------------------------------------------------------------

    def _attribute(self, element: str) -> str:
        specs = self.elements.get(element, ())
        return specs[0].attribute if specs else ""

    def _plan(self, term: SearchTerm) -> _Plan | None:
        match term:
            case ById(customer_id):
                attr = self._attribute("customer_id")
                # directories compare ids ignoring case; the contract wants exact
                return _Plan(
                    f"({attr}={escape_filter_chars(customer_id)})",
                    lambda e: customer_id in _texts(e, attr),
                )
            case ByEmail(address):
                value = escape_filter_chars(address.strip())
                parts = [f"({self._attribute('email')}={value})"]
                parts += [f"({a}=smtp:{value})" for a in self.preset.email_attributes]
                return _Plan("(|" + "".join(parts) + ")")
            case ByPhone(digits):
                attrs = [s.attribute for s in self.elements.get("phone", ())]
                tail = digits[-PHONE_SUFFIX_DIGITS:]
                # separators may sit between any two digits: "*5*5*5*0*1*0*2*"
                pattern = "*" + "*".join(escape_filter_chars(d) for d in tail) + "*"
                return _Plan(
                    "(|" + "".join(f"({a}={pattern})" for a in attrs) + ")",
                    lambda e: any(phone_matches(v, digits) for a in attrs for v in _texts(e, a)),
                    paged=True,
                )
            case ByName(last, first):
                if len(last.strip()) < MIN_NAME_PREFIX:
                    return None
                clause = f"({self._attribute('last_name')}={escape_filter_chars(last)}*)"
                if first:
                    clause += f"({self._attribute('first_name')}={escape_filter_chars(first)}*)"
                return _Plan(clause)

    def _customers(self, conn: Any, wanted: str, plan: _Plan, limit: int) -> list[Customer]:
        entries = self._search(conn, wanted, self.attributes, limit, plan.keep, plan.paged)
        followed = self._follow(conn, entries)
        return [Customer(self._fields(entry, followed)) for entry in entries]

    def _search(
        self,
        conn: Any,
        wanted: str,
        attributes: list[str],
        limit: int,
        keep: Callable[[Entry], bool] | None = None,
        paged: bool = False,
    ) -> list[Entry]:
        """Entries under base_dn that pass ``keep``; paged: page by page until ``limit``."""
        size_limit = self.options.size_limit
        if not paged:  # one request; the server stops at what can be used
            entries = self._page(
                conn, wanted, attributes, size_limit if keep else min(limit, size_limit), None, None
            )[0]
            return [e for e in entries if keep is None or keep(e)][:limit]
        found: list[Entry] = []
        cookie: bytes | None = None
        read = 0
        while True:
            page, cookie = self._page(
                conn, wanted, attributes, size_limit, min(self.page_size, size_limit), cookie
            )
            read += len(page)
            found += [e for e in page if keep is None or keep(e)]
            if cookie is None or len(found) >= limit or read >= size_limit:
                break
        if cookie is not None:  # tell the server to drop the rest of the paged search
            conn.search(
                self.options.base_dn, wanted, attributes=["1.1"], paged_size=0, paged_cookie=cookie
            )
        return found[:limit]

    def _page(
        self,
        conn: Any,
        wanted: str,
        attributes: list[str],
        size_limit: int,
        page_size: int | None,
        cookie: bytes | None,
    ) -> tuple[list[Entry], bytes | None]:
        conn.search(
            self.options.base_dn,
            wanted,
            attributes=attributes,
            size_limit=size_limit,
            time_limit=self.receive_timeout,
            paged_size=page_size,
            paged_cookie=cookie,
        )
        self._raise_for(conn.result)
        entries = [
            {k.lower(): list(v) for k, v in item["raw_attributes"].items()}
            for item in conn.response or ()
            if item.get("type") == "searchResEntry"
        ]
        control = conn.result.get("controls", {}).get(_PAGED, {})
        return entries, control.get("value", {}).get("cookie") or None

    def _follow(self, conn: Any, entries: list[Entry]) -> dict[tuple[str, str], str]:
        """(DN, attribute) -> text for every ``attr>other`` spec (e.g. the manager's name)."""
        wanted = {
            (dn, s.follow)
            for specs in self.elements.values()
            for s in specs
            if s.follow
            for entry in entries
            for dn in _texts(entry, s.attribute)
        }
        found: dict[tuple[str, str], str] = {}
        for dn in sorted({dn for dn, _ in wanted}):
            attrs = sorted({a for d, a in wanted if d == dn})
            conn.search(
                dn,
                "(objectClass=*)",
                search_scope=ldap3.BASE,
                attributes=attrs,
                time_limit=self.receive_timeout,
            )
            if conn.result["result"] not in _OK_CODES:
                continue  # outside our view or deleted: fall back to the next spec
            for item in conn.response or ():
                if item.get("type") == "searchResEntry":
                    entry = {k.lower(): list(v) for k, v in item["raw_attributes"].items()}
                    for attr in attrs:
                        found[(dn, attr)] = ", ".join(_texts(entry, attr))
        return found

    def _fields(self, entry: Entry, followed: dict[tuple[str, str], str]) -> dict[str, str]:
        fields: dict[str, str] = {}
        for element, specs in self.elements.items():
            single = element in INSERTABLE_FIELDS
            value = ""
            for spec in specs:
                value = _value(spec, entry, followed, single)
                if value:
                    break
            if value or is_insertable(element):
                fields[element] = value
        return fields

    def _raise_for(self, result: dict[str, Any]) -> None:
        code = result.get("result", 0)
        if code in _OK_CODES:
            return
        if code == _CODE_NO_SUCH_OBJECT:
            raise BackendError(f"base_dn {self.options.base_dn!r} was not found in the directory")
        if code == 3:  # timeLimitExceeded
            raise BackendTimeout("the directory did not finish the search in time")
        if code == 87:  # filterError
            raise BackendError(
                f"the directory rejected the filter; check user_filter ({self.person_filter})"
            )
        raise BackendError(
            f"directory search failed: {result.get('description')} "
            f"{result.get('message', '')}".strip()
        )

    # -- connections -------------------------------------------------------------------

    def _run(self, operation: Callable[[Any], T]) -> T:
        """Run ``operation`` on a pooled connection, once more on a fresh one if it was dropped."""
        conn, reused = self._pool.take()
        try:
            return self._attempt(conn, operation)
        except _Unusable as exc:
            # a server that timed out is alive but stuck: a second try would only wait again
            if not reused or exc.timed_out:
                raise _combined([exc]) from None
        self._pool.flush()  # its siblings died with the same server session
        try:
            return self._attempt(self._connect(), operation)
        except _Unusable as exc:
            raise _combined([exc]) from None

    def _attempt(self, conn: Any, operation: Callable[[Any], T]) -> T:
        try:
            with abort_on_timeout(lambda: shut_down(conn.socket)):
                result = operation(conn)
        except lx.LDAPCommunicationError as exc:
            _unbind(conn)
            if timed_out():
                raise _aborted() from None
            raise _network_error(exc, "the directory connection failed") from exc
        except lx.LDAPInvalidFilterError as exc:  # every other part of a filter is escaped
            self._pool.give_back(conn)
            raise BackendError(f"user_filter is not a valid LDAP filter: {exc}") from None
        except BaseException:
            _unbind(conn)
            raise
        self._pool.give_back(conn)
        return result

    def _connect(self) -> Any:
        """A bound connection to the first URL that works, recently failed ones last."""
        now = time.monotonic()
        order = sorted(range(len(self.options.url)), key=lambda i: self._down.get(i, 0) > now)
        errors: list[BackendError] = []
        for i in order:
            try:
                conn = self._connect_to(self.options.url[i])
            except _Unusable as exc:
                self._down[i] = time.monotonic() + QUARANTINE
                errors.append(exc)
                continue
            self._down.pop(i, None)
            return conn
        raise _combined(errors)

    def _connect_to(self, url: str) -> Any:
        # a Server of its own per connection: ldap3 keeps per-address state on it (current
        # address, availability) that concurrent connections would otherwise overwrite
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=self._ca_file)
        server = ldap3.Server(
            url, connect_timeout=self.connect_timeout, get_info=ldap3.NONE, tls=tls
        )
        conn = ldap3.Connection(
            server,
            user=self.options.bind_dn,
            password=self.options.password.reveal(),
            client_strategy=ldap3.SYNC,
            receive_timeout=self.receive_timeout,
            auto_referrals=False,
            read_only=True,
            raise_exceptions=False,
        )
        where = f"{'ldaps' if server.ssl else 'ldap'}://{server.host}:{server.port}"
        try:
            with abort_on_timeout(lambda: shut_down(conn.socket)):
                self._open(conn, where)
        except _Unusable:
            if timed_out():  # whatever the shut-down socket made ldap3 raise
                raise _aborted() from None  # not _Unusable: no other URL, no quarantine
            raise
        return conn

    def _open(self, conn: Any, where: str) -> None:
        """Connect, start TLS if asked, bind; unbound again on any failure."""
        server = conn.server
        try:
            conn.open(read_server_info=False)
            if self.options.start_tls:
                conn.start_tls(read_server_info=False)
            bound = conn.bind(read_server_info=False)
        except (
            ssl.SSLError,
            ssl.CertificateError,
            lx.LDAPStartTLSError,
            lx.LDAPCertificateError,
        ) as exc:
            _unbind(conn)
            reason = (
                f"the certificate does not name {server.host}"
                if isinstance(exc, lx.LDAPCertificateError)
                else _reason(exc)
            )
            raise _Unusable(
                f"TLS failure with {where}: {reason}; check ca_file (the CA that "
                "signed the directory's certificate) and that url names the host "
                "in the certificate"
            ) from exc
        except lx.LDAPCommunicationError as exc:
            _unbind(conn)
            raise _network_error(exc, f"cannot connect to {where}") from exc
        except (KeyError, IndexError, ValueError) as exc:  # ldap3 decoding a non-LDAP reply
            _unbind(conn)
            raise _Unusable(f"{where} did not answer like an LDAP server (wrong port?)") from exc
        if not bound:
            code, description = conn.result.get("result"), conn.result.get("description")
            _unbind(conn)
            if code == _CODE_BAD_CREDENTIALS:  # the same account everywhere: no failover
                raise BackendError(
                    f"{where} rejected bind_dn/password (invalid credentials); "
                    "check the service account and its password"
                )
            raise BackendError(f"{where} refused the bind: {description}")


class _Unusable(BackendError):
    """A URL or connection failed in a way another one may not (a retry may help)."""

    def __init__(self, message: str, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


# -- values ------------------------------------------------------------------------------


def _value(spec: Spec, entry: Entry, followed: dict[tuple[str, str], str], single: bool) -> str:
    values = _texts(entry, spec.attribute)
    if spec.follow:
        values = [followed[(v, spec.follow)] for v in values if followed.get((v, spec.follow))]
    elif spec.transform == "cn":
        values = [_first_rdn_value(v) for v in values]
    elif spec.transform == "smtp":
        smtp = [v for v in values if v[:5].lower() == "smtp:"]
        values = [v[5:] for v in sorted(smtp, key=lambda v: not v.startswith("SMTP:"))]
    if spec.index is not None:
        values = values[spec.index : spec.index + 1]
    elif single:
        values = values[:1]  # HelpSpot inserts it into one request field
    return ", ".join(v for v in values if v)


def _texts(entry: Entry, attribute: str) -> list[str]:
    """An attribute's values as text; binaries only in their standard string forms."""
    name = attribute.lower()
    raw = entry.get(name, [])
    if name == "objectguid":
        return [str(uuid.UUID(bytes_le=v)) for v in raw if len(v) == 16]
    if name == "objectsid":
        return [_sid(v) for v in raw if len(v) >= 8]
    texts = []
    for value in raw:
        if len(value) > MAX_VALUE_BYTES or name in NEVER_FETCHED:
            continue
        try:
            texts.append(value.decode("utf-8"))
        except UnicodeDecodeError:
            continue  # a binary attribute we have no text form for
    return texts


def _sid(raw: bytes) -> str:
    """S-1-5-21-... from a binary objectSid (revision, count, 48-bit authority, sub-ids)."""
    count = min(raw[1], (len(raw) - 8) // 4)
    subs = struct.unpack(f"<{count}I", raw[8 : 8 + 4 * count])
    return "-".join(["S", str(raw[0]), str(int.from_bytes(raw[2:8], "big")), *map(str, subs)])


def _first_rdn_value(dn: str) -> str:
    try:
        value = parse_dn(dn, escape=False, strip=True)[0][1]
    except (lx.LDAPInvalidDnError, IndexError):
        return dn
    return _unescape_dn_value(str(value))


def _unescape_dn_value(value: str) -> str:
    """RFC 4514: a backslash escapes a special character, or one byte as two hex digits."""
    raw = _DN_ESCAPE.sub(
        lambda m: bytes.fromhex(m[1].decode()) if len(m[1]) == 2 else m[1], value.encode()
    )
    return raw.decode("utf-8", errors="replace")


def _describe(customer: Customer) -> str:
    f = customer.fields
    name = " ".join(p for p in (f.get("first_name", ""), f.get("last_name", "")) if p)
    email = f.get("email", "")
    return f"{name} <{email}>" if email else name or customer.customer_id


def _wrap(text: str) -> str:
    text = text.strip()
    return text if not text or text.startswith("(") else f"({text})"


def _reason(exc: BaseException) -> str:
    """The useful part of an ldap3 error, without its wrappers and tuple reprs."""
    text = str(exc)
    for wrapper in (
        "socket connection error while opening: ",
        "socket ssl wrapping error: ",
        "wrap socket error: ",
    ):
        text = text.split(wrapper)[-1]
    text = re.sub(r" \(_ssl\.c:\d+\)", "", text).strip("()'\", ")
    return text or type(exc).__name__


def _network_error(exc: BaseException, what: str) -> _Unusable:
    if isinstance(exc, TimeoutError) or "timed out" in str(exc):
        return _Unusable(f"{what}: no answer in time", timed_out=True)
    return _Unusable(f"{what}: {_reason(exc)}")


def _aborted() -> BackendTimeout:
    return BackendTimeout("the directory did not answer within the source's timeout")


def _combined(errors: Sequence[BackendError]) -> BackendError:
    """What staff see: every URL's error; a timeout only when each one timed out."""
    if len(errors) == 1 and not isinstance(errors[0], _Unusable):
        return errors[0]
    timed_out = all(getattr(e, "timed_out", False) for e in errors)
    return (BackendTimeout if timed_out else BackendError)("; ".join(map(str, errors)))


def _unbind(conn: Any) -> None:
    with contextlib.suppress(lx.LDAPException, OSError):  # already gone: nothing to release
        conn.unbind()
