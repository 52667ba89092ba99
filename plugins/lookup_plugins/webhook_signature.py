"""Signing webhooks by the Standard Webhooks specification (https://www.standardwebhooks.com).

A delivery carries ``webhook-id`` (stable across retries), ``webhook-timestamp``
(the attempt's, integer seconds) and ``webhook-signature``: ``v1,`` and the
base64 of HMAC-SHA256 over ``{id}.{timestamp}.{body}``, one per key, separated
by spaces, so a receiver keeps verifying while its secret is rotated.

A secret is written as the specification serialises it: ``whsec_`` and the key
in base64. The key is the decoded bytes, never the text as typed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

#: How a symmetric secret starts (the spec's serialisation).
SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
#: The spec's bounds on a key: 24 bytes (192 bits) to 64 (512 bits).
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64
#: A command that makes a fitting secret, for the error that asks for one.
KEY_COMMAND = (
    "python3 -c \"import base64,os; print('whsec_' + base64.b64encode(os.urandom(32)).decode())\""
)


class BadSigningSecret(ValueError):
    """A configured secret that is not ``whsec_`` and a base64 key of the right size."""


def signing_key(secret: str) -> bytes:
    """The key bytes of a ``whsec_`` secret; BadSigningSecret (never quoting it) when unfit."""
    if not secret.startswith(SECRET_PREFIX):
        raise BadSigningSecret(f"must start with {SECRET_PREFIX} (make one with: {KEY_COMMAND})")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise BadSigningSecret(
            f"must be {SECRET_PREFIX} and the key in base64 (make one with: {KEY_COMMAND})"
        ) from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise BadSigningSecret(
            f"its key is {len(key)} bytes; the Standard Webhooks spec asks for "
            f"{MIN_KEY_BYTES} to {MAX_KEY_BYTES} (make one with: {KEY_COMMAND})"
        )
    return key


def signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """``v1,`` and the base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}``."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signature_headers(
    keys: Sequence[bytes], webhook_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three headers of a delivery signed with each of ``keys`` (the current one first)."""
    if "." in webhook_id:  # the spec: a dot would make two messages sign alike
        raise ValueError("a webhook-id must not contain a '.'")
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(k, webhook_id, timestamp, body) for k in keys),
    }
