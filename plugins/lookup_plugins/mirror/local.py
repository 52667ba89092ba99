"""A mirrored source's lookups, answered from the local copy, and its refreshes.

Lookups read the copy through the CSV backend (a SQLite index shared by every
worker through the page cache): no lookup waits on the directory or database,
so a slow or unreachable one does not slow lookups down. Each worker process
runs a refresh thread, but only the process holding the mirror's lock file
refreshes; the others find the pass done and wait for the next one. A copy
older than ``mirror_max_age`` is an error for staff, never stale data served
silently; its age is in the log, in ``lookup-server check`` and the console.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from lookup_server.plugin import BackendError, Customer, SearchTerm, SourceSettings, is_insertable

from ..csv.backend import CsvBackend, CsvOptions
from ..index_files import exclusive_lock, lock_unless_held
from .child import Rebuild, refresh_in_child
from .feed import MirrorFeed
from .refresh import MirrorFiles, timed_pass
from .settings import MirrorSettings, duration_text
from .state import MirrorStatus, read_status, write_status

log = logging.getLogger(__name__)
#: How often a lookup may re-read the status file.
STATUS_INTERVAL = 1.0
#: The refresh thread looks whether a pass is due at most this far apart (seconds).
MAX_TICK = 5.0


class Mirror:
    """The local copy of one source: lookups from it, refreshes of it."""

    def __init__(
        self,
        settings: MirrorSettings,
        feed: MirrorFeed,
        source: SourceSettings,
        rebuild: Rebuild | None = None,
    ) -> None:
        """``rebuild`` makes this mirror anew in a child process (picklable), for refreshes."""
        self.settings, self.feed, self._rebuild = settings, feed, rebuild
        self.where = f"sources.{settings.source}"
        self.files = MirrorFiles(settings.folder, feed.elements)
        copy = SourceSettings(name=source.name, backend="csv", max_results=source.max_results)
        self._copy = CsvBackend(CsvOptions(self.files.csv, self.files.index), copy)
        self._timeout = source.timeout
        self._copy_open = False
        self._status = MirrorStatus()
        self._status_read = -STATUS_INTERVAL
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lookups ------------------------------------------------------------------------

    def find(self, term: SearchTerm, limit: int) -> Sequence[Customer]:
        """Customers for ``term`` from the copy; an error when there is none or it is too old."""
        self.require_usable()
        found = self._copy.find(term, limit)
        if not self.feed.drops_empty:
            return found
        return [
            Customer({k: v for k, v in c.fields.items() if v or is_insertable(k)}) for c in found
        ]

    def require_usable(self) -> MirrorStatus:
        """The status; BackendError when no copy is published yet or it is older than allowed."""
        status = self.status()
        if not status.as_of:
            failed = f"; the last try failed: {status.error}" if status.error else ""
            raise BackendError(f"{self.where}: the mirror has no copy yet{failed}")
        age = time.time() - status.as_of
        if age > self.settings.max_age:
            why = (
                f"its refreshes fail: {status.error}"
                if status.error
                else "no refresh has finished since (is the server running?)"
            )
            raise BackendError(
                f"{self.where}: the mirror is {duration_text(age)} old, over mirror_max_age "
                f"({duration_text(self.settings.max_age)}); {why}"
            )
        return status

    def status(self) -> MirrorStatus:
        """The published copy's status, re-read at most once a second."""
        now = time.monotonic()
        if now - self._status_read >= STATUS_INTERVAL:
            self._status = read_status(self.files.status)
            self._status_read = now
        return self._status

    def describe(self) -> list[str]:
        """The copy's age and the last pass, for ``check`` and the console."""
        status = read_status(self.files.status)
        every = f"refreshed every {duration_text(self.settings.interval)}"
        limit = f"limit {duration_text(self.settings.max_age)}"
        if not status.as_of:
            return [f"mirror: no copy yet ({every}, {limit})"]
        lines = [
            f"mirror: {status.entries:,} entries as of {_when(status.as_of)}, "
            f"{duration_text(time.time() - status.as_of)} old ({every}, {limit}; "
            f"last pass: {status.kind} in {status.took:.1f} s)"
        ]
        if status.error:
            lines.append(f"mirror: the refresh of {_when(status.failed_at)} failed: {status.error}")
        return lines

    def check(self, live: Callable[[], list[str]]) -> list[str]:
        """The copy must be usable; then the store's own check failing is only a warning.

        The store is given half the source's timeout: a slow directory must not
        make ``check`` fail a source whose lookups do not wait for it.
        """
        self.require_usable()
        self._copy.check()
        outcome: list[list[str] | BackendError] = []

        def probe() -> None:
            try:
                outcome.append(live())
            except BackendError as exc:
                outcome.append(exc)

        worker = threading.Thread(target=probe, name=f"mirror-check-{self.settings.source}")
        worker.daemon = True
        worker.start()
        worker.join(self._timeout / 2)
        if not outcome:
            return [
                f"lookups are answered from the mirror, but its source did not answer "
                f"the check within {self._timeout / 2:g} s"
            ]
        if isinstance(outcome[0], BackendError):
            return [f"lookups are answered from the mirror, but its source fails: {outcome[0]}"]
        return outcome[0]

    # -- life cycle ---------------------------------------------------------------------

    def prepare(self) -> None:
        """Open the copy; when there is none yet, make the first one now (no deadline)."""
        self.files.make_folder()
        if not read_status(self.files.status).as_of:
            with exclusive_lock(self.files.lock):  # another worker may be making it
                if not read_status(self.files.status).as_of:
                    self._refresh(raise_errors=True)
        self._status_read = -STATUS_INTERVAL
        self._copy.prepare()
        self._copy_open = True

    def start(self) -> None:
        """Refresh in the background of this process (a daemon thread)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, name=f"mirror-{self.settings.source}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop the refresh thread (a pass under way, in its own process, finishes)."""
        self._stop.set()
        self._copy.close()

    def refresh_if_due(self, in_child: bool = False) -> MirrorStatus | None:
        """One pass if the interval has passed and no other process is refreshing.

        Returns the status after the pass, None when none ran. ``in_child`` runs
        it in a process of its own (see :mod:`lookup_plugins.mirror.child`).
        """
        before = read_status(self.files.status)
        if not self._due(before):
            return None
        self.files.make_folder()
        if in_child and self._rebuild is not None:
            if not refresh_in_child(self._rebuild):
                return None
            return self._after_pass(before)
        with lock_unless_held(self.files.lock) as held:
            if not held or not self._due(read_status(self.files.status)):
                return None  # another process refreshes, or just did
            return self._refresh(raise_errors=False)

    def refresh_now(self) -> MirrorStatus | None:
        """One pass now in this process, after any other's; None when it failed (logged)."""
        self.files.make_folder()
        with exclusive_lock(self.files.lock):
            status = self._refresh(raise_errors=False)
        return None if status.error else status

    def _due(self, status: MirrorStatus) -> bool:
        return time.time() - max(status.attempted_at, status.as_of) >= self.settings.interval

    def _loop(self) -> None:
        tick = min(MAX_TICK, max(0.2, self.settings.interval / 10))
        while not self._stop.wait(tick):
            try:
                self.refresh_if_due(in_child=True)
            except Exception:  # the thread must outlive any one pass
                log.exception("%s: the mirror's refresh failed unexpectedly", self.where)

    def _refresh(self, raise_errors: bool) -> MirrorStatus:
        """One pass here, lock held: the status records the attempt, then the outcome."""
        before = read_status(self.files.status)
        write_status(self.files.status, replace(before, attempted_at=time.time()))
        try:
            result, started, took = timed_pass(self.feed, self.files)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, BackendError) else f"{type(exc).__name__}: {exc}"
            failed = replace(read_status(self.files.status), error=reason, failed_at=time.time())
            write_status(self.files.status, failed)
            self._after_pass(before)
            if raise_errors:
                message = f"{self.where}: the mirror's first copy failed: {reason}"
                raise BackendError(message) from None
            return failed
        done = MirrorStatus(started, result.entries, result.kind, took, started)
        done = replace(
            done, changed=result.changed, gone=result.gone, read=result.read, by=os.getpid()
        )
        write_status(self.files.status, done)
        return self._after_pass(before)

    def _after_pass(self, before: MirrorStatus) -> MirrorStatus:
        """Switch this process to the new copy, and log what the pass did."""
        status = read_status(self.files.status)
        self._status_read = -STATUS_INTERVAL
        if status.error:
            age = f"{duration_text(time.time() - before.as_of)} old" if before.as_of else "none"
            log.error(
                "%s: mirror refresh failed (copy in use: %s): %s", self.where, age, status.error
            )
            return status
        if self._copy_open:
            self._copy.prepare()  # this process switches now; the others within a second
        log.info(
            "%s: mirror refreshed (%s): %d entries, %d changed, %d gone (%d read), in %.1f s",
            self.where,
            status.kind,
            status.entries,
            status.changed,
            status.gone,
            status.read,
            status.took,
        )
        return status


def _when(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(moment))
