"""Microsoft Entra ID (Azure AD) users through Microsoft Graph (``backend = "msgraph"``).

Client-credentials sign-in with msal (the token is cached in memory until it
expires), then ``GET /v1.0/users``: ``$filter`` with ``eq`` for an exact id or
e-mail (``'`` doubled inside the quoted value), ``$search`` with
``ConsistencyLevel: eventual`` for name prefixes. The manager's display name
comes from ``$expand=manager``. Neither the secret nor a token ever reaches a
message or a log record.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import msal
import requests

from lookup_server.plugin import (
    BackendError,
    BackendTimeout,
    ByEmail,
    ById,
    ByName,
    Customer,
    SearchTerm,
    Secret,
    SourceBackend,
    SourceSettings,
    matches_literally,
    with_field_map,
)

from . import http_client
from .http_client import Deadline, dig, text_of

log = logging.getLogger(__name__)
VENDOR = "Microsoft Graph"
PAGE_SIZE = 25
MAX_PAGES = 4
_GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: AADSTS codes that mean "no such tenant".
_UNKNOWN_TENANT = {90002, 900023, 90013}

SELECT = (
    "id",
    "employeeId",
    "userPrincipalName",
    "onPremisesSamAccountName",
    "givenName",
    "surname",
    "displayName",
    "mail",
    "businessPhones",
    "mobilePhone",
    "jobTitle",
    "department",
    "companyName",
    "officeLocation",
)


@dataclass(frozen=True)
class MsGraphOptions:
    """The ``[sources.NAME]`` keys of a Microsoft Graph source."""

    tenant: str
    client_id: str
    client_secret: Secret
    #: The user property HelpSpot stores as the customer id.
    id_property: Literal["id", "employeeId", "userPrincipalName", "onPremisesSamAccountName"] = "id"
    #: Sign-in host; change for national clouds (or the test emulator).
    authority_host: str = "https://login.microsoftonline.com"
    #: Graph host; change for national clouds (or the test emulator).
    graph_endpoint: str = "https://graph.microsoft.com"
    #: CA bundle for TLS-inspecting proxies (and the test emulator); default: system CAs.
    ca_bundle: Path | None = None


def odata_string(value: str) -> str:
    """``value`` as an OData string literal: single quotes, ``'`` doubled."""
    return "'" + value.replace("'", "''") + "'"


def search_clause(prop: str, value: str) -> str:
    r"""One ``"property:value"`` clause of ``$search``; ``\`` and ``"`` escaped."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{prop}:{escaped}"'


class DeadlineHttp:
    """The HTTP client handed to msal: each call ends by the running lookup's deadline."""

    def __init__(self, verify: bool | str) -> None:
        self.session = http_client.AbortableSession()
        # per request: REQUESTS_CA_BUNDLE in the environment beats Session.verify
        self.verify = verify
        self._local = threading.local()

    @contextmanager
    def bounded(self, deadline: Deadline) -> Iterator[None]:
        """Bound msal's calls in this block by ``deadline``."""
        self._local.deadline = deadline
        try:
            yield
        finally:
            self._local.deadline = None

    def _timeout(self) -> tuple[float, float]:
        deadline: Deadline | None = getattr(self._local, "deadline", None)
        left = deadline.remaining() if deadline is not None else 10.0
        if left <= 0:
            raise requests.Timeout("lookup deadline reached")
        return (left, left)

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        """GET for msal."""
        kwargs.update(timeout=self._timeout(), verify=self.verify)
        return self.session.get(url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        """POST for msal."""
        kwargs.update(timeout=self._timeout(), verify=self.verify)
        return self.session.post(url, **kwargs)

    def close(self) -> None:
        """Close the pool."""
        self.session.close()


class MsGraphBackend(SourceBackend[MsGraphOptions]):
    """Live Lookup of Entra ID users, with their manager's name."""

    Options = MsGraphOptions

    def __init__(self, options: MsGraphOptions, source: SourceSettings) -> None:
        super().__init__(options, source)
        self._app: Any = None
        self._http: DeadlineHttp | None = None
        self._lock = threading.Lock()

    # -- capabilities -----------------------------------------------------------------

    def find(self, term: SearchTerm, limit: int) -> Sequence[Customer]:
        """Users matching ``term``; Graph cannot search phone numbers by their digits."""
        deadline = Deadline(self.source.timeout)
        params, advanced = self._query(term)
        if params is None:
            return []
        found: list[tuple[str, dict[str, str]]] = []
        url: str | None = self._graph_url("/v1.0/users")
        for _ in range(MAX_PAGES):
            if url is None or len(found) >= limit:
                break
            body = self._get(url, deadline, params, advanced)
            users = body.get("value")
            if not isinstance(users, list):
                raise BackendError("Microsoft Graph sent a malformed user list; try again later")
            found += [
                (text_of(dig(u, "id")), f)
                for u, f in ((u, self._fields(u)) for u in users)
                if matches_literally(term, f)
            ]
            url, params = self._next_link(body), None  # the next link carries the query
        found = found[:limit]
        if advanced:
            self._add_managers(found, deadline)
        return [Customer(with_field_map(f, self.source)) for _, f in found]

    def check(self) -> list[str]:
        """Sign in and read one user (needs User.Read.All)."""
        deadline = Deadline(self.source.timeout)
        self._get(self._graph_url("/v1.0/users"), deadline, {"$top": "1", "$select": "id"}, False)
        return []

    def close(self) -> None:
        """Close the HTTP connection pool."""
        if self._http is not None:
            self._http.close()

    # -- queries ------------------------------------------------------------------------

    def _query(self, term: SearchTerm) -> tuple[dict[str, str] | None, bool]:
        """Query parameters for ``term`` and whether it is an advanced ($search) query."""
        if _CONTROL.search(" ".join(str(v) for v in vars(term).values())):
            return None, False  # no directory value holds control characters; Graph says 400
        select = ",".join(SELECT)
        base = {"$select": select, "$top": str(PAGE_SIZE)}
        if isinstance(term, ById):
            prop = self.options.id_property
            if prop == "id" and not _GUID.fullmatch(term.customer_id):
                return None, False  # not an object id: Graph would answer 400
            flt = f"{prop} eq {odata_string(term.customer_id)}"
        elif isinstance(term, ByEmail):
            flt = f"mail eq {odata_string(term.address)}"
        elif isinstance(term, ByName):
            # surname/givenName are matched by prefix in $search (only displayName
            # and description are tokenized), which is the lookup's name rule.
            search = search_clause("surname", term.last)
            if term.first:
                search += " AND " + search_clause("givenName", term.first)
            return {**base, "$search": search, "$count": "true"}, True
        else:
            # businessPhones/mobilePhone only compare whole stored strings, never digits.
            return None, False
        return {**base, "$filter": flt, "$expand": "manager($select=displayName)"}, False

    def _next_link(self, body: dict[str, Any]) -> str | None:
        link = body.get("@odata.nextLink")
        # Never send the bearer token anywhere but the configured Graph host.
        if isinstance(link, str) and link.startswith(self._graph_url("/")):
            return link
        return None

    def _add_managers(self, found: list[tuple[str, dict[str, str]]], deadline: Deadline) -> None:
        """Managers of $search results, one call each (kept out of the advanced query)."""
        for object_id, fields in found:
            url = self._graph_url(f"/v1.0/users/{quote(object_id, safe='')}/manager")
            try:
                body = self._get(url, deadline, {"$select": "displayName"}, False)
            except _NotFound:
                continue
            if text_of(body.get("displayName")):
                fields["manager"] = text_of(body.get("displayName"))

    def _fields(self, user: Any) -> dict[str, str]:
        listed = dig(user, "businessPhones")
        phones = [text_of(p) for p in listed if p] if isinstance(listed, list) else []
        mobile = text_of(dig(user, "mobilePhone"))
        fields = {
            "customer_id": text_of(dig(user, self.options.id_property)),
            "first_name": text_of(dig(user, "givenName")),
            "last_name": text_of(dig(user, "surname")),
            "email": text_of(dig(user, "mail")),
            "phone": phones[0] if phones else mobile,
        }
        extras = {
            "title": text_of(dig(user, "jobTitle")),
            "department": text_of(dig(user, "department")),
            "company": text_of(dig(user, "companyName")),
            "office": text_of(dig(user, "officeLocation")),
            "mobile": mobile if phones else "",
            "user_principal_name": text_of(dig(user, "userPrincipalName")),
            "manager": text_of(dig(user, "manager", "displayName")),
        }
        return fields | {k: v for k, v in extras.items() if v}

    # -- HTTP -----------------------------------------------------------------------------

    def _graph_url(self, path: str) -> str:
        return self.options.graph_endpoint.rstrip("/") + path

    def _get(
        self, url: str, deadline: Deadline, params: dict[str, str] | None, advanced: bool
    ) -> dict[str, Any]:
        response = self._send(url, deadline, params, advanced)
        if response.status_code == 401:
            # A token revoked before its expiry stays in msal's cache: drop it, try once more.
            self._client_app().remove_tokens_for_client()
            response = self._send(url, deadline, params, advanced)
        body = http_client.json_body(response, VENDOR) if response.content else None
        if response.status_code != 200:
            raise _graph_error(response.status_code, body)
        if not isinstance(body, dict):
            raise BackendError("Microsoft Graph sent an unexpected answer; try again later")
        return body

    def _send(
        self, url: str, deadline: Deadline, params: dict[str, str] | None, advanced: bool
    ) -> requests.Response:
        headers = {"Authorization": "Bearer " + self._token(deadline)}
        if advanced:
            headers["ConsistencyLevel"] = "eventual"
        session = self._session()
        assert self._http is not None
        return http_client.send(
            session,
            "GET",
            url,
            deadline,
            vendor=VENDOR,
            params=params,
            headers=headers,
            verify=self._http.verify,
        )

    def _session(self) -> requests.Session:
        if self._http is None:
            bundle = self.options.ca_bundle
            self._http = DeadlineHttp(str(bundle) if bundle is not None else True)
        return self._http.session

    # -- sign-in --------------------------------------------------------------------------

    def _token(self, deadline: Deadline) -> str:
        """An app-only access token; msal serves it from its cache until it expires."""
        self._session()
        assert self._http is not None
        scope = self._graph_url("/.default")
        try:
            with self._http.bounded(deadline):
                result = self._client_app().acquire_token_for_client(scopes=[scope])
        except requests.Timeout:
            raise BackendTimeout(
                f"Microsoft Entra sign-in did not answer within {deadline.budget:g} s"
            ) from None
        except ValueError:  # msal reading a sign-in answer that is not JSON
            raise BackendError(
                "Microsoft Entra sign-in sent an unreadable answer; try again later"
            ) from None
        except requests.RequestException as exc:
            raise BackendError(
                f"cannot reach Microsoft Entra sign-in ({type(exc).__name__}); "
                "check authority_host and the network"
            ) from None
        token = result.get("access_token") if isinstance(result, dict) else None
        if isinstance(token, str) and token:
            return token
        raise _token_error(result if isinstance(result, dict) else {}, self.options)

    def _client_app(self) -> Any:
        with self._lock:
            if self._app is None:
                assert self._http is not None
                authority = f"{self.options.authority_host.rstrip('/')}/{self.options.tenant}"
                try:
                    self._app = msal.ConfidentialClientApplication(
                        self.options.client_id,
                        client_credential=self.options.client_secret.reveal(),
                        authority=authority,
                        http_client=self._http,
                        # the host is given explicitly (national cloud or emulator)
                        instance_discovery=False,
                    )
                except ValueError as exc:
                    raise _authority_error(str(exc), self.options) from None
            return self._app


class _NotFound(BackendError):
    """Graph answered 404 (Request_ResourceNotFound)."""


def _graph_error(status: int, body: Any) -> BackendError:
    code = text_of(dig(body, "error", "code"))
    message = text_of(dig(body, "error", "message"))[:200]
    if status == 404:
        return _NotFound(f"Microsoft Graph found nothing there ({code or 'HTTP 404'})")
    if status == 401:
        return BackendError(
            f"Microsoft Graph rejected the access token ({code or 'HTTP 401'});"
            " check the app registration's tenant and client_id"
        )
    if status == 403:
        return BackendError(
            "the app may not read users (HTTP 403): grant it the User.Read.All "
            "application permission with admin consent"
        )
    if status >= 500:
        return http_client.outage_error(VENDOR, status)
    detail = f"{code}: {message}" if code else f"HTTP {status}"
    return BackendError(f"Microsoft Graph refused the query ({detail})")


def _token_error(result: dict[str, Any], options: MsGraphOptions) -> BackendError:
    error = text_of(result.get("error")) or "unknown error"
    codes = {c for c in result.get("error_codes") or [] if isinstance(c, int)}
    aadsts = ", ".join(f"AADSTS{c}" for c in sorted(codes))
    where = f"{error}{', ' + aadsts if aadsts else ''}"
    if codes & _UNKNOWN_TENANT or error == "invalid_tenant":
        return BackendError(
            f"Microsoft Entra does not know the tenant {options.tenant!r} ({where}); check tenant"
        )
    if error in ("invalid_client", "unauthorized_client"):
        return BackendError(
            f"Microsoft Entra rejected the app's credentials ({where}); "
            "check client_id and client_secret (secrets expire)"
        )
    if error == "temporarily_unavailable":
        return http_client.outage_error("Microsoft Entra sign-in", 503)
    return BackendError(f"Microsoft Entra sign-in failed ({where})")


def _authority_error(text: str, options: MsGraphOptions) -> BackendError:
    # msal's text may quote the whole discovery answer; keep only what staff can act on.
    if "Unable to get authority configuration" in text or "OIDC Discovery" in text:
        return BackendError(
            f"Microsoft Entra does not know the tenant {options.tenant!r}; "
            "check tenant (a GUID or a domain like contoso.onmicrosoft.com)"
        )
    return BackendError(
        f"authority_host {options.authority_host!r} is not usable: it must be "
        "an https address such as https://login.microsoftonline.com"
    )
