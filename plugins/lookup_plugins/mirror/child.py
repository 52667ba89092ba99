"""Refreshes in a process of their own, so that lookups keep their worker's interpreter.

A pass decodes every entry of a directory and writes a new copy: seconds of
Python for 100,000 entries. On a thread of a gunicorn worker it would take
the interpreter lock from that worker's lookups for as long; in a child
process it takes a core at most, at a lower priority. The child gets what
builds the mirror anew (``Rebuild``, pickled on its standard input), takes
the mirror's lock itself (so a pass outlives a worker that is restarted
without two running at once) and leaves its outcome in the mirror's status.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .local import Mirror

#: Builds the mirror of a source from its backend's class, options and settings.
Rebuild = Callable[[], "Mirror"]
#: The child's exit codes: the pass ran (its status says how it went), or no pass ran.
RAN, NOT_RUN = 0, 3


def rebuilt_mirror(backend_class: type[Any], options: Any, source: Any) -> Mirror:
    """The mirror of a new ``backend_class(options, source)`` (what a child refreshes)."""
    mirror: Mirror = backend_class(options, source).mirror
    return mirror


def refresh_in_child(rebuild: Rebuild) -> bool:
    """Run one due pass in a new interpreter and wait for it; whether a pass ran."""
    child = subprocess.Popen(
        [sys.executable, "-m", "lookup_plugins.mirror.child"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _out, err = child.communicate(pickle.dumps(rebuild))
    if child.returncode not in (RAN, NOT_RUN):
        raise RuntimeError(f"the refresh process failed: {err.decode(errors='replace')[-500:]}")
    return child.returncode == RAN


def _main() -> int:
    os.nice(10)  # background work: the lookups staff wait on come first
    logging.disable(logging.CRITICAL)  # the parent logs the outcome, from the status
    rebuild: Rebuild = pickle.loads(sys.stdin.buffer.read())  # noqa: S301 - our own parent's
    return RAN if rebuild().refresh_if_due() is not None else NOT_RUN


if __name__ == "__main__":
    sys.exit(_main())
