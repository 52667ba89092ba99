"""Answers joined from fragments the renderer wrote ahead of time (no XML library here).

The bytes come from :mod:`lookup_server.helpspot.render` (``fragment_renderer``),
run by a backend's background process over its whole index; this module only
names the settings they were rendered with (:func:`spec_for`) and joins
them. It imports no lxml, so a command-line lookup answered from fragments
never loads it.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from lookup_server.core import fragments, models
from lookup_server.core.fragments import FragmentSpec
from lookup_server.core.models import Audience
from lookup_server.core.sources import SourceSettings

#: Bump to re-render every stored fragment even when no source file changed
#: (an lxml upgrade that writes other bytes, say).
RENDER_FORMAT = 1
_HERE = Path(__file__).resolve().parent
#: The files whose code decides a fragment's bytes.
_RENDERER_SOURCES = (
    _HERE / "render.py",
    _HERE / "view.py",  # display_label
    Path(models.__file__),  # element names, what is insertable
    Path(fragments.__file__),  # the frame
)


@cache
def renderer_version() -> str:
    """Changes whenever the renderer's code does: fragments of another version are not used."""
    digest = hashlib.sha256(str(RENDER_FORMAT).encode())
    for path in _RENDERER_SOURCES:
        try:
            digest.update(path.read_bytes())
        except OSError:  # installed without sources: the format number alone
            digest.update(path.name.encode())
    return digest.hexdigest()[:16]


def spec_for(source: SourceSettings, audience: Audience) -> FragmentSpec:
    """What the fragments of ``source``'s customers for ``audience`` are rendered with."""
    return FragmentSpec.of(
        audience,
        source.labels,
        source.html_fields,
        source.clear_empty,
        source.columns,
        source.fields,
        renderer_version(),
    )
