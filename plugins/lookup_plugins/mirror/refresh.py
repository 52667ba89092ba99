"""One refresh of a mirror: read the store, update the records, publish a new copy.

A pass is a full copy when there is no copy yet, when the source's
configuration changed, when the feed has no change markers, and once a day
(which also catches what markers cannot show: a manager renamed, a row whose
change time was set in the past). Otherwise it reads only what changed since
the newest marker it has seen, plus the keys of everything there is now: the
only portable way to see deletions (neither OpenLDAP nor an arbitrary table
keeps a record of what was deleted, and AD's tombstones need rights a lookup
account lacks). The key list is cheap: no attributes, no columns but one.

A pass that finds nothing new keeps the published copy (its age still
counts from the pass). Publishing writes the records as a CSV file aside, renames it into place and
has the CSV index machinery index it (under that index's own lock, swapped in
atomically), so lookups only ever see a complete copy: the previous one until
the new one is indexed. A pass that fails leaves the records, the CSV and its
index as they were.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lookup_server.plugin import BackendError

from ..csv.index import IndexLayout, open_fresh_index
from .feed import MarkerNotValid, MirrorFeed
from .state import RecordStore, write_private

log = logging.getLogger(__name__)
#: A pass with markers makes a full copy at least this often anyway (seconds).
FULL_COPY_EVERY = 86400.0
#: Characters a CSV cell cannot carry through the index (NUL stops its reader).
_UNSTORABLE = str.maketrans("", "", "\x00")


@dataclass(frozen=True)
class PassResult:
    """What one pass did."""

    kind: str
    entries: int
    #: records that differ from the copy's
    changed: int = 0
    gone: int = 0
    #: records read (a pass of changes reads the newest ones seen before again)
    read: int = 0


class MirrorFiles:
    """Where one mirror keeps its files, and the CSV index layout over its copy."""

    def __init__(self, folder: Path, elements: tuple[str, ...]) -> None:
        self.folder = folder
        self.csv = folder / "mirror.csv"
        self.index = folder / "mirror.index.sqlite3"
        self.status = folder / "status.json"
        self.lock = folder / "refresh.lock"
        self.records = RecordStore(folder / "records.sqlite3")
        keys = {e: e for e in ("customer_id", "email", "phone", "last_name", "first_name")}
        self.layout = IndexLayout(self.csv, self.index, ",", keys)
        self.elements = elements

    def make_folder(self) -> None:
        """The folder, the server's only (the copy holds customers' data)."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)


def run_pass(feed: MirrorFeed, files: MirrorFiles, started: float) -> PassResult:
    """Bring the records up to date with the store, then publish them (lock held)."""
    meta = files.records.meta()
    signature = feed.signature()
    marker = json.loads(meta.get("marker", "null"))
    full = (
        meta.get("signature") != signature
        or marker is None
        or started - float(meta.get("full_at", "0")) > FULL_COPY_EVERY
    )
    held = files.records.count()
    result = None if full else _changes(feed, files, marker, held, meta)
    if result is None:
        records = list(feed.read_all())
        _refuse_emptying(held, len(records))
        newest = feed.newest(r.marker for r in records)
        count = files.records.replace_all(records, _meta(signature, newest, full_at=started))
        result = PassResult("full copy", count, changed=count, read=count)
    if files.records.unpublished():  # a pass that found nothing new leaves the copy as it is
        publish(feed, files)
        files.records.published()
    return result


def _changes(
    feed: MirrorFeed, files: MirrorFiles, marker: object, held: int, meta: dict[str, str]
) -> PassResult | None:
    """A pass of changes since ``marker``; None when the store cannot tell them."""
    try:
        changed = list(feed.read_changed(marker))
    except MarkerNotValid as exc:
        log.info("a full copy instead of changes: %s", exc)
        return None
    # read after the changes: what is added meanwhile is among the next pass's changes
    keys = feed.read_keys() | {r.key for r in changed}
    _refuse_emptying(held, len(keys))
    newest = feed.newest([marker, *(r.marker for r in changed)])
    differ, gone, count = files.records.apply(
        changed, keys, _meta(meta["signature"], newest, full_at=float(meta["full_at"]))
    )
    return PassResult("changes", count, changed=differ, gone=gone, read=len(changed))


def _refuse_emptying(held: int, found: int) -> None:
    """A store that answers with nobody at all is more likely broken than emptied."""
    if found == 0 and held > 0:
        raise BackendError(
            f"the source returned no entries at all where the mirror holds {held:,}; keeping "
            "the copy (a lost permission, a wrong filter?). If the store really is empty, "
            "delete the mirror's folder"
        )


def _meta(signature: str, newest: object, full_at: float) -> dict[str, str]:
    return {"signature": signature, "marker": json.dumps(newest), "full_at": repr(full_at)}


def publish(feed: MirrorFeed, files: MirrorFiles) -> None:
    """Write the records as the mirror's CSV and index it; lookups switch when it is done."""
    stored = files.records.everything()
    tmp = files.csv.with_name(f"{files.csv.name}.{os.getpid()}.tmp")
    write_private(tmp, _csv_bytes(feed, stored))
    os.replace(tmp, files.csv)
    try:
        open_fresh_index(files.layout)  # built here, once, under the index's lock
    except BackendError as exc:
        raise BackendError(f"the mirror's copy cannot be indexed: {exc}") from None


def _csv_bytes(feed: MirrorFeed, stored: Mapping[str, Mapping[str, object]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(feed.elements)
    for fields in feed.customers(stored):
        writer.writerow([fields.get(e, "").translate(_UNSTORABLE) for e in feed.elements])
    return out.getvalue().encode("utf-8")


def timed_pass(feed: MirrorFeed, files: MirrorFiles) -> tuple[PassResult, float, float]:
    """``run_pass`` with when it started and how long it took."""
    started = time.time()
    result = run_pass(feed, files, started)
    return result, started, time.time() - started
