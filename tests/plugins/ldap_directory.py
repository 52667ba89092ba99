"""The test directory: contract people in both flavours, plus hard cases.

Subtrees of ``dc=example,dc=com``:

* ``ou=contract-ad`` / ``ou=contract-openldap``: exactly the contract's PEOPLE,
  as Active Directory ``user`` objects and as ``inetOrgPerson`` entries.
* ``ou=staff``: AD users with hard cases (accents, apostrophes, ``*`` and ``(``
  in names and DNs, disabled accounts, proxyAddresses, managers, groups,
  binary attributes, a photo) and a few hundred generated colleagues.
* ``ou=people-extra``: inetOrgPerson entries with multi-valued attributes.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator, Sequence

from ldap3.utils.dn import escape_rdn

from tests.plugins.slapd import SERVICE_PASSWORD, SUFFIX, Entry
from tests.support.backend_contract import PEOPLE, Person

CONTRACT_AD = f"ou=contract-ad,{SUFFIX}"
CONTRACT_OPENLDAP = f"ou=contract-openldap,{SUFFIX}"
STAFF = f"ou=staff,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
EXTRA = f"ou=people-extra,{SUFFIX}"

UAC_ENABLED, UAC_DISABLED = 512, 514
#: Disabled (bit 2) plus "password never expires"; 66048 is the same, enabled.
UAC_DISABLED_NO_EXPIRY, UAC_ENABLED_NO_EXPIRY = 66050, 66048

BOSS_CN = "D'Arcy, Dana (CEO)"
BOSS_DN = f"cn={escape_rdn(BOSS_CN)},{STAFF}"
BOSS_DISPLAY = "Dana D'Arcy"
ZOE_GUID = uuid.UUID("6f9619ff-8b86-d011-b42d-00c04fc964ff")
ZOE_SID = "S-1-5-21-1004336348-1177238915-682003330-1105"
PHOTO = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40  # a 10 KiB "JPEG"
SALES_GROUP = f"cn={escape_rdn('Sales (EMEA)')},{GROUPS}"
ALL_STAFF_GROUP = f"cn=All Staff,{GROUPS}"

FIRST_NAMES = [
    "Zoë",
    "Łukasz",
    "Ægir",
    "Renée",
    "François",
    "Siobhán",
    "Jürgen",
    "Ana María",
    "O'Neil",
    "Maël",
    "Chloé",
    "Øystein",
]
LAST_NAMES = [
    "Müller",
    "O'Connor",
    "Ñandú",
    "D'Angelo",
    "Çelik",
    "Søren-Smith",
    "de la Peña",
    "Wild*Star",
    "(Bracket)",
    "Back\\Slash",
    "Dupont",
    "Nguyễn",
]


def sid_bytes(text: str) -> bytes:
    """Binary objectSid for its S-1-... string form."""
    parts = text.split("-")
    revision, authority, subs = int(parts[1]), int(parts[2]), [int(p) for p in parts[3:]]
    return (
        bytes([revision, len(subs)])
        + authority.to_bytes(6, "big")
        + b"".join(struct.pack("<I", s) for s in subs)
    )


def directory() -> list[Entry]:
    """Every entry of the test directory."""
    return [*_skeleton(), *_contract(), *_staff(), *_extra()]


def _ou(dn: str) -> Entry:
    name = dn.split(",")[0].split("=")[1]
    return dn, {"objectClass": ["organizationalUnit"], "ou": [name]}


def _skeleton() -> Iterator[Entry]:
    yield SUFFIX, {"objectClass": ["dcObject", "organization"], "dc": ["example"], "o": ["Example"]}
    for ou in (f"ou=Service,{SUFFIX}", CONTRACT_AD, CONTRACT_OPENLDAP, STAFF, GROUPS, EXTRA):
        yield _ou(ou)
    yield (
        f"cn=svc-lookup,ou=Service,{SUFFIX}",
        {
            "objectClass": ["person"],
            "cn": ["svc-lookup"],
            "sn": ["Lookup"],
            "userPassword": [SERVICE_PASSWORD],
        },
    )
    for dn, name in ((SALES_GROUP, "Sales (EMEA)"), (ALL_STAFF_GROUP, "All Staff")):
        yield (
            dn,
            {
                "objectClass": ["group"],
                "cn": [name],
                "sAMAccountName": [name],
                "objectCategory": ["group"],
                "member": [BOSS_DN],
            },
        )


#: The contract's AD users carry uSNChanged from here up, one apart, in PEOPLE's order.
FIRST_USN = 1000


def _contract() -> Iterator[Entry]:
    for n, person in enumerate(PEOPLE):
        yield _ad_user(CONTRACT_AD, person, manager=None, uSNChanged=[str(FIRST_USN + n)])
        yield (
            f"uid={person.customer_id},{CONTRACT_OPENLDAP}",
            {
                "objectClass": ["inetOrgPerson"],
                "uid": [person.customer_id],
                "cn": [f"{person.first_name} {person.last_name}"],
                "sn": [person.last_name],
                "givenName": [person.first_name],
                "mail": [person.email],
                "telephoneNumber": [person.phone],
                "title": [person.title],
            },
        )


def _ad_user(
    base: str,
    p: Person,
    manager: str | None,
    uac: int = UAC_ENABLED,
    **extra: Sequence[str | bytes],
) -> Entry:
    cn = f"{p.first_name} {p.last_name}"
    attrs: dict[str, Sequence[str | bytes]] = {
        "objectClass": ["user"],
        "objectCategory": ["person"],
        "cn": [cn],
        "sAMAccountName": [p.customer_id],
        "givenName": [p.first_name],
        "sn": [p.last_name],
        "displayName": [cn],
        "mail": [p.email],
        "proxyAddresses": [f"SMTP:{p.email}"],
        "telephoneNumber": [p.phone],
        "title": [p.title],
        "userAccountControl": [str(uac)],
        "objectGUID": [uuid.uuid5(uuid.NAMESPACE_DNS, p.customer_id).bytes_le],
        "company": ["Example Ltd"],
        **extra,
    }
    if manager:
        attrs["manager"] = [manager]
    return f"cn={escape_rdn(cn)},{base}", attrs


def _staff() -> Iterator[Entry]:
    boss = Person("boss", "Dana", "D'Arcy", "dana@corp.example", "+1 555 300 0001", "CEO")
    yield (
        BOSS_DN,
        {**_ad_user(STAFF, boss, None)[1], "cn": [BOSS_CN], "displayName": [BOSS_DISPLAY]},
    )
    zoe = Person(
        "zoe.lemaitre",
        "Zoë",
        "Le Maître",
        "zoe@corp.example",
        "+33 1 42 68 53 00",
        "Directrice « Ventes »",
    )
    yield _ad_user(
        STAFF,
        zoe,
        BOSS_DN,
        department=["Sales"],
        memberOf=[SALES_GROUP, ALL_STAFF_GROUP],
        proxyAddresses=[
            "SMTP:zoe@corp.example",
            "smtp:zoe.alias@corp.example",
            "X400:c=FR;a= ;p=Corp;o=Exchange;s=Zoe",
            "sip:zoe.sip@corp.example",
        ],
        objectGUID=[ZOE_GUID.bytes_le],
        objectSid=[sid_bytes(ZOE_SID)],
        thumbnailPhoto=[PHOTO],
        mobile=["+33 6 12 34 56 78"],
    )
    yield _ad_user(
        STAFF,
        Person("star", "Star", "Wild*Card", "star@corp.example", "555-400-0001", "Ops"),
        BOSS_DN,
    )
    yield _ad_user(
        STAFF,
        Person("paren", "Paren", "(Paren) Parker", "paren@corp.example", "555-400-0002", "Ops"),
        BOSS_DN,
    )
    for sam, uac in (
        ("gone1", UAC_DISABLED),
        ("gone2", UAC_DISABLED_NO_EXPIRY),
        ("here3", UAC_ENABLED_NO_EXPIRY),
    ):
        yield _ad_user(
            STAFF,
            Person(
                sam, "Retired", f"Leaver {sam}", f"{sam}@corp.example", "555-400-0100", "Former"
            ),
            BOSS_DN,
            uac=uac,
        )
    yield from _colleagues()


def colleagues(count: int = 300) -> list[tuple[Person, int, str]]:
    """Generated AD users: person, userAccountControl, manager DN ("" for none)."""
    people = []
    for i in range(count):
        first = FIRST_NAMES[i % len(FIRST_NAMES)]
        last = f"{LAST_NAMES[(i // len(FIRST_NAMES)) % len(LAST_NAMES)]} {i:03d}"
        person = Person(
            f"u{i:04d}", first, last, f"u{i:04d}@corp.example", f"+44 161 496 {i:04d}", "Staff"
        )
        people.append(
            (person, UAC_DISABLED if i % 10 == 9 else UAC_ENABLED, BOSS_DN if i % 2 else "")
        )
    return people


def _colleagues() -> Iterator[Entry]:
    for i, (person, uac, manager) in enumerate(colleagues()):
        yield _ad_user(
            STAFF, person, manager or None, uac=uac, department=["Support" if i % 3 else "Sales"]
        )


def _extra() -> Iterator[Entry]:
    yield (
        f"uid=multi,{EXTRA}",
        {
            "objectClass": ["inetOrgPerson"],
            "uid": ["multi"],
            "cn": ["Multi Valued"],
            "sn": ["Valued"],
            "givenName": ["Multi"],
            "mail": ["multi@example.org", "multi.alias@example.org"],
            "telephoneNumber": ["+49 30 901820", "+49 30 901821"],
            "description": ["first line", "second line"],
            "title": ["Dev"],
        },
    )
