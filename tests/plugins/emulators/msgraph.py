"""A Microsoft Entra sign-in + Microsoft Graph ``/v1.0/users`` stand-in, over TLS.

msal only accepts https authorities, so this emulator serves TLS with a CA
made for the test run (see :func:`make_tls`). Shapes follow learn.microsoft.com:
OIDC discovery at ``/{tenant}/v2.0/.well-known/openid-configuration``; the
token endpoint ``/{tenant}/oauth2/v2.0/token`` (client credentials) answering
``{"token_type", "expires_in", "ext_expires_in", "access_token"}`` or
``{"error", "error_description", "error_codes", ...}``; ``GET /v1.0/users``
with ``$filter`` (``eq`` clauses, ``''`` inside literals), ``$search``
(``"property:value"`` clauses, ``ConsistencyLevel: eventual`` required),
``$select``, ``$expand=manager``, ``$top`` with ``@odata.nextLink``; errors as
``{"error": {"code", "message", "innerError"}}``.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
import ssl
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from flask import Flask, Response, request

from tests.plugins.emulators import Scripted


@dataclass
class GraphUser:
    """One directory user."""

    id: str
    given_name: str
    surname: str
    mail: str
    business_phones: list[str]
    job_title: str = ""
    employee_id: str = ""
    department: str = ""
    manager_id: str = ""

    def resource(self) -> dict[str, Any]:
        """The user as Graph returns it (before $select)."""
        upn = self.mail.split("@")[0].casefold() + "@contoso.onmicrosoft.com"
        return {
            "id": self.id,
            "employeeId": self.employee_id or None,
            "userPrincipalName": upn,
            "onPremisesSamAccountName": None,
            "givenName": self.given_name or None,
            "surname": self.surname or None,
            "displayName": f"{self.given_name} {self.surname}".strip(),
            "mail": self.mail or None,
            "businessPhones": list(self.business_phones),
            "mobilePhone": None,
            "jobTitle": self.job_title or None,
            "department": self.department or None,
            "companyName": None,
            "officeLocation": None,
        }


# -- query languages ----------------------------------------------------------------------

_FILTER_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<word>[A-Za-z_/]+))")


def parse_filter(text: str) -> list[list[tuple[str, str]]] | None:
    """``a eq 'x' and b eq 'y' or ...`` as OR-groups of (property, value); None if invalid."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text.rstrip()):
        m = _FILTER_TOKEN.match(text, pos)
        if m is None:
            return None
        pos = m.end()
        if m.group("str") is not None:
            tokens.append(("str", m.group("str")[1:-1].replace("''", "'")))
        else:
            tokens.append(("word", m.group("word")))
    groups: list[list[tuple[str, str]]] = [[]]
    i = 0
    while i < len(tokens):
        if i + 2 >= len(tokens) or tokens[i + 1] != ("word", "eq") or tokens[i + 2][0] != "str":
            return None
        groups[-1].append((tokens[i][1], tokens[i + 2][1]))
        i += 3
        if i < len(tokens):
            if tokens[i] == ("word", "or"):
                groups.append([])
            elif tokens[i] != ("word", "and"):
                return None
            i += 1
    return groups


def parse_search(text: str) -> list[list[tuple[str, str]]] | None:
    """``"p:v" AND "p:v" OR ...`` as OR-groups of (property, value); None if invalid."""
    groups: list[list[tuple[str, str]]] = [[]]
    pos, text = 0, text.strip()
    while pos < len(text):
        if text[pos] != '"':
            return None
        chars, pos = [], pos + 1
        while pos < len(text) and text[pos] != '"':
            if text[pos] == "\\" and pos + 1 < len(text):
                pos += 1
            chars.append(text[pos])
            pos += 1
        if pos >= len(text):
            return None
        clause = "".join(chars)
        prop, sep, value = clause.partition(":")
        groups[-1].append((prop, value) if sep else ("displayName", clause))
        rest = text[pos + 1 :].lstrip()
        for op in ("AND ", "OR "):
            if rest.startswith(op):
                if op == "OR ":
                    groups.append([])
                rest = rest[len(op) :].lstrip()
        pos = len(text) - len(rest)
    return groups


def _search_hit(resource: dict[str, Any], prop: str, value: str) -> bool:
    stored = str(resource.get(prop) or "").casefold()
    value = value.casefold()
    if prop in ("displayName", "description"):
        # tokenized: every word of the value starts some word of the property
        words = re.findall(r"\w+", stored)
        return all(any(w.startswith(v) for w in words) for v in re.findall(r"\w+", value))
    return stored.startswith(value)  # every other string property: startsWith


def _filter_hit(resource: dict[str, Any], prop: str, value: str) -> bool:
    stored = resource.get(prop)
    return isinstance(stored, str) and stored.casefold() == value.casefold()


# -- TLS ------------------------------------------------------------------------------------


def make_tls(folder: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context for 127.0.0.1 and the CA file that trusts it."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lookup-server test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, ca_file


# -- the server -------------------------------------------------------------------------------


@dataclass
class GraphEmulator:
    """One tenant with one app registration and its users."""

    users: list[GraphUser]
    tenant: str
    client_id: str
    client_secret: str
    issued: list[str] = field(default_factory=list)
    token_requests: int = 0
    #: (query parameters, ConsistencyLevel header) of every /users request
    user_queries: list[tuple[dict[str, str], str]] = field(default_factory=list)
    script: list[Scripted] = field(default_factory=list)
    base_url: str = ""

    def fail_next(
        self,
        status: int,
        body: Any,
        headers: dict[str, str] | None = None,
        times: int = 1,
        path_contains: str = "/v1.0/",
    ) -> None:
        """Answer the next matching requests with this instead."""
        self.script.extend(
            Scripted(status, body, headers or {}, path_contains) for _ in range(times)
        )

    def app(self) -> Flask:
        """The WSGI app."""
        app = Flask("graph-emulator")
        app.before_request(self._scripted)
        app.add_url_rule("/<tenant>/v2.0/.well-known/openid-configuration", "oidc", self._oidc)
        app.add_url_rule("/<tenant>/oauth2/v2.0/token", "token", self._token, methods=["POST"])
        app.add_url_rule("/v1.0/users", "users", self._users)
        app.add_url_rule("/v1.0/users/<user_id>/manager", "manager", self._manager)
        return app

    def _scripted(self) -> Response | None:
        for i, s in enumerate(self.script):
            if s.path_contains in request.path:
                del self.script[i]
                return _json(s.body, s.status, s.headers)
        return None

    def _oidc(self, tenant: str) -> Response:
        if tenant != self.tenant:
            return _json(
                _aad_error(
                    "invalid_tenant",
                    90002,
                    f"Tenant '{tenant}' not found. Check to make sure you have "
                    "the correct tenant ID.",
                ),
                400,
            )
        root = f"{self.base_url}/{tenant}"
        return _json(
            {
                "token_endpoint": f"{root}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"{root}/discovery/v2.0/keys",
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "issuer": f"{root}/v2.0",
                "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
            },
            200,
        )

    def _token(self, tenant: str) -> Response:
        self.token_requests += 1
        form = request.form
        if form.get("grant_type") != "client_credentials":
            return _json(_aad_error("unsupported_grant_type", 70003, "Unsupported grant."), 400)
        if form.get("client_id") != self.client_id:
            return _json(
                _aad_error(
                    "unauthorized_client",
                    700016,
                    f"Application with identifier '{form.get('client_id')}' was "
                    "not found in the directory.",
                ),
                400,
            )
        if form.get("client_secret") != self.client_secret:
            return _json(
                _aad_error(
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. "
                    "Ensure the secret being sent in the request is the client "
                    "secret value, not the client secret ID.",
                ),
                401,
            )
        token = "eyJ0eXAiOiJKV1Qi." + uuid.uuid4().hex
        self.issued.append(token)
        return _json(
            {
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": token,
            },
            200,
        )

    def _authorized(self) -> Response | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or header[7:] not in self.issued:
            return _json(
                _graph_error(
                    "InvalidAuthenticationToken",
                    "Access token validation failure. Invalid audience.",
                ),
                401,
            )
        return None

    def _users(self) -> Response:
        denied = self._authorized()
        if denied is not None:
            return denied
        args = {k: v for k, v in request.args.items()}
        consistency = request.headers.get("ConsistencyLevel", "")
        self.user_queries.append((args, consistency))
        hits = self._matching(args, consistency)
        if isinstance(hits, Response):
            return hits
        top, skip = int(args.get("$top", "100")), int(args.get("$skiptoken", "0"))
        page = hits[skip : skip + top]
        body: dict[str, Any] = {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users"
        }
        if args.get("$count") == "true":
            body["@odata.count"] = len(hits)
        body["value"] = [self._shape(u, args) for u in page]
        if skip + top < len(hits):
            rest = {**args, "$skiptoken": str(skip + top)}
            query = "&".join(f"{k}={quote(v, safe='')}" for k, v in rest.items())
            body["@odata.nextLink"] = f"{self.base_url}/v1.0/users?{query}"
        return _json(body, 200)

    def _matching(self, args: dict[str, str], consistency: str) -> list[GraphUser] | Response:
        if "$search" in args:
            if consistency != "eventual":
                return _json(
                    _graph_error(
                        "Request_UnsupportedQuery",
                        "Request with $search query parameter only works through MSGraph "
                        "with a special request header: 'ConsistencyLevel: eventual'",
                    ),
                    400,
                )
            groups = parse_search(args["$search"])
            hit = _search_hit
        elif "$filter" in args:
            groups = parse_filter(args["$filter"])
            hit = _filter_hit
        else:
            return list(self.users)
        if groups is None:
            return _json(_graph_error("BadRequest", "Invalid filter clause"), 400)
        return [
            u
            for u in self.users
            if any(all(hit(u.resource(), p, v) for p, v in g) for g in groups if g)
        ]

    def _shape(self, user: GraphUser, args: dict[str, str]) -> dict[str, Any]:
        resource = user.resource()
        if "$select" in args:
            wanted = args["$select"].split(",")
            resource = {k: v for k, v in resource.items() if k in wanted or k == "id"}
        if args.get("$expand", "").startswith("manager"):
            boss = next((u for u in self.users if u.id == user.manager_id), None)
            if boss is not None:
                resource["manager"] = {
                    "@odata.type": "#microsoft.graph.user",
                    "id": boss.id,
                    "displayName": boss.resource()["displayName"],
                }
        return resource

    def _manager(self, user_id: str) -> Response:
        denied = self._authorized()
        if denied is not None:
            return denied
        user = next((u for u in self.users if u.id == user_id), None)
        boss = next((u for u in self.users if user and u.id == user.manager_id), None)
        if boss is None:
            return _json(
                _graph_error(
                    "Request_ResourceNotFound",
                    "Resource 'manager' does not exist or one of its queried "
                    "reference-property objects are not present.",
                ),
                404,
            )
        return _json(
            {
                "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#directoryObjects"
                "(displayName)/$entity",
                "@odata.type": "#microsoft.graph.user",
                "displayName": boss.resource()["displayName"],
            },
            200,
        )


def _aad_error(error: str, code: int, description: str) -> dict[str, Any]:
    trace = str(uuid.uuid4())
    return {
        "error": error,
        "error_description": f"AADSTS{code}: {description} Trace ID: {trace} "
        f"Correlation ID: {uuid.uuid4()} Timestamp: 2026-11-21 10:00:00Z",
        "error_codes": [code],
        "timestamp": "2026-11-21 10:00:00Z",
        "trace_id": trace,
        "correlation_id": str(uuid.uuid4()),
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }


def _graph_error(code: str, message: str) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": "2026-11-21T10:00:00",
                "request-id": str(uuid.uuid4()),
                "client-request-id": str(uuid.uuid4()),
            },
        }
    }


def _json(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    text = body if isinstance(body, str) else json.dumps(body)
    return Response(
        text, status=status, headers=headers or {}, content_type="application/json; charset=utf-8"
    )
