"""Everything a backend plugin may import from lookup-server, and nothing else.

A source backend subclasses :class:`SourceBackend` and registers in the
``lookup_server.backends`` entry point group; a target backend subclasses
:class:`TargetBackend` and registers in ``lookup_server.targets``. Both get the
search terms and models below, raise :class:`BackendError` with a message for
staff (:class:`DeliveryFailed`, with the peer's status and answer, when a peer
refused a webhook), and wrap each blocking step in :func:`abort_on_timeout`.
A plugin that keeps records of its own takes a :class:`StoreLocation` option
(a file, or a PostgreSQL database every server shares) and, for the latter,
gets its connections and tables from :class:`PostgresDatabase`.
A source with background work (a sync) gets a :data:`WebhookSubmitter` in
``start_background``, its one way to hand work to a target through the outbox.
The rest of ``lookup_server`` is private and may change between releases; see
docs/plugins.md for a complete example.
"""

from collections.abc import Callable, Mapping

from lookup_server.config.schema import Secret, StoreLocation
from lookup_server.core.backend import (
    BackendError,
    BackendTimeout,
    DeliveryFailed,
    NoOptions,
    NotFound,
)
from lookup_server.core.calls import abort_on_timeout, shut_down, timed_out
from lookup_server.core.fragments import FragmentSpec, Frame, Prerendered
from lookup_server.core.models import (
    INSERTABLE_FIELDS,
    ByEmail,
    ById,
    ByName,
    ByPhone,
    Customer,
    Option,
    OptionsQuery,
    PushDetails,
    PushRequest,
    SearchTerm,
    Webhook,
    element_name_problem,
    is_insertable,
)
from lookup_server.core.paths import cache_dir, state_dir
from lookup_server.core.pool import ConnectionPool
from lookup_server.core.postgres import PostgresDatabase
from lookup_server.core.search import (
    MIN_NAME_PREFIX,
    PHONE_SUFFIX_DIGITS,
    matches_literally,
    phone_digits,
    phone_matches,
    with_field_map,
)
from lookup_server.core.sources import SourceBackend, SourceSettings, WebhookSubmitter
from lookup_server.core.targets import TargetBackend, TargetSettings
from lookup_server.core.templates import (
    Note,
    TemplateProblem,
    TextTemplate,
    html_to_text,
    request_context,
    request_link,
    template_problem,
)


def fragment_renderer(spec: FragmentSpec) -> tuple[Frame, Callable[[Mapping[str, str]], bytes]]:
    """The document frame and a customer's ``<customer>`` fragment, rendered for ``spec``.

    For backends that store fragments ahead of time (:meth:`SourceBackend.find_rendered`):
    the bytes are exactly what the renderer writes for a lookup. The renderer
    (and lxml) load only when called.
    """
    from lookup_server.helpspot.render import fragment_renderer as renderer

    return renderer(spec)


__all__ = [
    "INSERTABLE_FIELDS",
    "MIN_NAME_PREFIX",
    "PHONE_SUFFIX_DIGITS",
    "BackendError",
    "BackendTimeout",
    "ByEmail",
    "ById",
    "ByName",
    "ByPhone",
    "ConnectionPool",
    "Customer",
    "DeliveryFailed",
    "FragmentSpec",
    "Frame",
    "NoOptions",
    "NotFound",
    "Note",
    "Option",
    "OptionsQuery",
    "PostgresDatabase",
    "Prerendered",
    "PushDetails",
    "PushRequest",
    "SearchTerm",
    "Secret",
    "SourceBackend",
    "SourceSettings",
    "StoreLocation",
    "TargetBackend",
    "TargetSettings",
    "TemplateProblem",
    "TextTemplate",
    "Webhook",
    "WebhookSubmitter",
    "abort_on_timeout",
    "cache_dir",
    "element_name_problem",
    "fragment_renderer",
    "html_to_text",
    "is_insertable",
    "matches_literally",
    "phone_digits",
    "phone_matches",
    "request_context",
    "request_link",
    "shut_down",
    "state_dir",
    "template_problem",
    "timed_out",
    "with_field_map",
]
