"""The behavioural suite every Request Push / webhook target must pass.

A target's test module subclasses :class:`TargetContract`, sets ``backend_name``
and provides two fixtures:

* ``contract_peer``: the other system, real or emulated, as a
  :class:`ContractPeer` that can be told to fail. For an HTTP API, wrap its
  emulator's WSGI app in :class:`HttpPeer`.
* ``make_contract_target``: a function ``(address, timeout) -> target`` making
  the target, configured for the peer at ``address`` with that ``timeout``,
  and with :data:`CONTRACT_SECRET` as its password, token or secret URL part.

The cases below check only the capabilities the class declares
(``capabilities()``) and what every target owes its caller whatever the other
system is: an id HelpSpot can keep, details for that id and ``NotFound`` for
others, webhooks accepted again when redelivered, only ``BackendError`` when
the peer fails, short messages that never hold the secret, ``BackendTimeout``
once the core aborts a call to a peer that hangs, and the thread and
connection back soon after. What is particular to one target (its wording, its
wire format) stays in its own tests. ``tests/test_contract_coverage.py`` fails
when a registered target has no run.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, ClassVar, Literal, Protocol, TypeVar

import pytest
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from lookup_server.core.backend import ANSWER_EXCERPT_CHARS
from lookup_server.core.registry import PluginError, Registry
from lookup_server.plugin import (
    BackendError,
    BackendTimeout,
    DeliveryFailed,
    NotFound,
    PushDetails,
    PushRequest,
    Secret,
    TargetBackend,
    Webhook,
)
from lookup_server.runtime.service import ABORT_GRACE, DeadlineRunner
from tests.support.hanging import DrippingApp, as_target, hang_every_slot, wait_for

T = TypeVar("T")

#: Put this in the target's options where its password, token or secret URL goes:
#: no message, warning or log line may ever hold it, nor any long part of it.
CONTRACT_SECRET = "contract-secret-4f1d9b27c6e8a035"
#: A leak of this many characters of the secret counts (a URL cut at 60 characters...).
SECRET_WINDOW = 12
#: Staff read the message in the request page: a sentence, not a page.
MAX_MESSAGE_CHARS = 500
#: HelpSpot keeps at most 255 characters of a push id (HELPSPOT.md §5).
MAX_ID_CHARS = 255
#: Timeout of the targets the cases make, when they do not hang on purpose.
TIMEOUT = 5.0
#: Timeout of the targets whose peer hangs; the peer drips faster than this, so
#: no per-read timeout fires and only the core's abort can end the call.
HANG_TIMEOUT = 0.5
DRIP_INTERVAL = 0.05
#: After the core gave up, an aborted call must be back within this.
RETURN_BOUND = ABORT_GRACE + 2.0

#: How a peer can fail:
#:
#: * ``refuse``: nothing accepts connections at its address any more (for the rest
#:   of the test);
#: * ``reject``: it refuses the target's credentials (HTTP 403);
#: * ``error``: it answers that it failed (HTTP 5xx), with an error page that echoes
#:   the request line, as many servers' pages do (Express: ``Cannot POST /path``),
#:   and its headers, as debug pages do;
#: * ``garbage``: it answers with something that is not its protocol (a proxy's
#:   login page, binary junk) and says all is well (HTTP 200);
#: * ``hang``: it accepts, starts an answer and never finishes it.
Failure = Literal["refuse", "reject", "error", "garbage", "hang"]
#: The failures after which a target must fail (or, where noted, may still work).
ANSWERED_FAILURES: tuple[Failure, ...] = ("refuse", "reject", "error", "garbage")
#: Capability -> what the cases call it by.
OPERATIONS = ("push", "details", "webhook")


class ContractPeer(Protocol):
    """The other system of a target under contract, which the cases make fail."""

    @property
    def address(self) -> str:
        """Where it answers; handed to ``make_contract_target``."""
        ...

    @property
    def open_connections(self) -> int:
        """Connections of a ``hang`` that the target has not closed yet."""
        ...

    def fail(self, how: Failure) -> None:
        """From now on, fail ``how`` (see :data:`Failure`)."""
        ...

    def recover(self) -> None:
        """Answer normally again (never asked after ``refuse``)."""
        ...


MakeTarget = Callable[[str, float], TargetBackend[Any]]
F = TypeVar("F", bound=Callable[..., None])


def _probing(case: F) -> F:
    """Mark a case taking ``operation`` to run for ``check`` too, where check probes."""
    setattr(case, "probes_too", True)  # noqa: B010  (read back by pytest_generate_tests)
    return case


# -- an HTTP peer ------------------------------------------------------------------------


class _PeerHandler(WSGIRequestHandler):
    # HTTP/1.0: every answer closes its connection, so once the peer is stopped no
    # pooled connection still reaches it ("refuse" holds for every later request)
    protocol_version = "HTTP/1.0"

    def log(self, type: str, message: str, *args: Any) -> None:
        pass  # the peer's own log lines would hold the request line: not the target's


class HttpPeer:
    """A :class:`ContractPeer` for HTTP APIs: ``app`` (an emulator) served on loopback.

    Misbehaves on request in front of the app; a ``hang`` is an answer whose
    body never ends (:class:`~tests.support.hanging.DrippingApp`), the one that
    per-read timeouts cannot bound.
    """

    def __init__(self, app: Any, drip_interval: float = DRIP_INTERVAL) -> None:
        self.app = app
        self.failing: Failure | None = None
        self._dripping = DrippingApp(self._answer, interval=drip_interval)
        self._dripping.dripping = False
        self._server: BaseWSGIServer = make_server(
            "127.0.0.1", 0, self._dripping, threaded=True, request_handler=_PeerHandler
        )
        self.port: int = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._serving = False

    @property
    def address(self) -> str:
        """The base URL, ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def open_connections(self) -> int:
        """Answers still dripping: their client has not hung up yet."""
        return self._dripping.open_connections

    def __enter__(self) -> HttpPeer:
        self._thread.start()
        self._serving = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._dripping.stop()
        self._stop_serving()

    def _stop_serving(self) -> None:
        if self._serving:
            self._serving = False
            self._server.shutdown()
            self._thread.join()
            self._server.server_close()

    def fail(self, how: Failure) -> None:
        """Fail ``how`` from now on."""
        self.failing = how
        self._dripping.dripping = how == "hang"
        if how == "refuse":
            self._stop_serving()

    def recover(self) -> None:
        """Answer through the app again."""
        assert self.failing != "refuse", "a peer that refused stays down"
        self.failing = None
        self._dripping.dripping = False

    def _answer(self, environ: dict[str, Any], start_response: Any) -> Any:
        if self.failing in ("reject", "error"):
            status = "403 Forbidden" if self.failing == "reject" else "500 Internal Server Error"
            line = f"{environ['REQUEST_METHOD']} {environ.get('RAW_URI', '/')}"
            page = f"Cannot {line}: {status}\n"
            if self.failing == "error":
                page += "".join(
                    f"{name[5:].replace('_', '-').title()}: {value}\n"
                    for name, value in sorted(environ.items())
                    if name.startswith("HTTP_")
                )
            return _plain(environ, start_response, status, page.encode())
        if self.failing == "garbage":
            junk = b"\xff\xfe<html><body><h1>Sign in to the proxy</h1>\x00\x01<form"
            return _plain(environ, start_response, "200 OK", junk, "text/html")
        return self.app(environ, start_response)


def _plain(
    environ: dict[str, Any],
    start_response: Any,
    status: str,
    body: bytes,
    kind: str = "text/plain; charset=utf-8",
) -> list[bytes]:
    # read the request first: werkzeug would otherwise block draining it after the answer
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response(status, [("Content-Type", kind), ("Content-Length", str(len(body)))])
    return [body]


# -- what the cases send ----------------------------------------------------------------------

#: A request as HelpSpot pushes it (HELPSPOT.md §5), with a customer to create.
PUSHED = PushRequest(
    {
        "xRequest": "12400",
        "sTitle": "Printer <on> fire & smoke",
        "sFirstName": "Zoë",
        "sLastName": "Núñez-O'Brien",
        "sEmail": "zoe.nunez@example.com",
        "sPhone": "+44 20 7946 0002",
        "fullname": "Zoë Núñez-O'Brien",
        "staff_comment": "Please call back <b>today</b>",
        "acting_person_fname": "Ada",
        "acting_person_lname": "Lovelace",
        "request_history": {"678": {"tNote": "<p>Hi</p>", "files": [{"sFilename": "a.pdf"}]}},
    }
)
#: Another request, by another customer.
OTHER = PushRequest(
    {
        "xRequest": "12401",
        "sTitle": "Refund",
        "sFirstName": "Grace",
        "sLastName": "Hopper",
        "sEmail": "grace.hopper@example.com",
        "fullname": "Grace Hopper",
    }
)
#: Requests a target must answer with an id or a BackendError, never a crash.
ODD_REQUESTS: dict[str, PushRequest] = {
    "empty": PushRequest({}),
    "number-only": PushRequest({"xRequest": "7"}),
    "markup": PushRequest(
        {
            "xRequest": "8",
            "sTitle": "<script>alert(1)</script> <!channel> <https://evil|click> &amp;",
            "sFirstName": "Robert'); DROP TABLE people;--",
            "sLastName": "<b>Tables</b>",
            "sEmail": "bobby+tables@example.com",
        }
    ),
    "control-characters": PushRequest(
        {"xRequest": "9", "sFirstName": "Nul\x00l", "sLastName": "Bell\x07\u202e", "sTitle": "\x0b"}
    ),
    "huge": PushRequest(
        {"xRequest": "10", "sLastName": "Long", "sTitle": "t" * 5000, "staff_comment": "x" * 10**5}
    ),
    "odd-types": PushRequest(
        {
            "xRequest": 11,
            "sFirstName": None,
            "sLastName": ["Lists"],
            "sEmail": {"not": "text"},
            "fReopened": True,
            "request_history": {"1": {"2": {"3": [1, 2.5, None]}}},
        }
    ),
}
#: A webhook as the outbox hands it over.
WEBHOOK = Webhook(
    41,
    "7c9e6679-7425-40de-944b-e07fc1f90ae7",
    {
        "xRequest": "12400",
        "sTitle": "Printer <on> fire & smoke",
        "sStatus": "Active",
        "fullname": "Zoë Núñez-O'Brien",
        "acting_person": "Ada Lovelace",
        "note_type": "public",
        "note_content": "<p>We are on it & more</p>",
        "request_history": {"item": {"678": {"tNote": "x"}}},
    },
)
#: Payloads a target must accept or refuse with a BackendError, never a crash.
ODD_PAYLOADS: dict[str, Mapping[str, object]] = {
    "empty": {},
    "markup": {"xRequest": "8", "sTitle": "<!channel> <script>x</script>", "note_content": "&"},
    "control-characters": {"xRequest": "9", "note_content": "a\x00b\x0bc\u202e"},
    "huge": {"xRequest": "10", "note_content": "x" * 10**5},
    "odd-types": {"xRequest": 11, "sTitle": None, "note_content": ["x"], "deep": {"a": {"b": [1]}}},
}


# -- the contract ------------------------------------------------------------------------------


class TargetContract:
    """Shared behaviour of target backends; subclass once per target."""

    backend_name: ClassVar[str]
    #: False when ``check()`` does not contact the other system (say why where you set
    #: it): then it need not notice a dead peer, but must still fail only with
    #: BackendError.
    check_contacts_peer: ClassVar[bool] = True
    #: ``(options, keys)``: options ``validate`` must reject, naming at least those keys.
    #: Required when the target overrides ``validate``.
    invalid_options: ClassVar[Sequence[tuple[Any, set[str]]]] = ()
    #: Ids the peer has never given out; ``details`` must say NotFound for each.
    unknown_push_ids: ClassVar[Sequence[str]] = (
        "424242424",
        "no-such-push",
        "../../account",
        "1 OR 1=1",
        "%2e%2e%2f",
    )

    # -- what a target's test module provides ---------------------------------------------

    @pytest.fixture
    def contract_peer(self) -> Iterator[ContractPeer]:
        raise NotImplementedError("provide the other system, e.g. HttpPeer(emulator.app())")

    @pytest.fixture
    def make_contract_target(self) -> MakeTarget:
        raise NotImplementedError(
            "provide (address, timeout) -> a target for the peer there, holding CONTRACT_SECRET"
        )

    # -- built from it -----------------------------------------------------------------------

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """``operation``: each capability the class offers; plus ``check`` where it probes."""
        if "operation" not in metafunc.fixturenames:
            return
        try:
            offered = Registry().targets.load(self.backend_name).capabilities()
        except PluginError:
            offered = frozenset(OPERATIONS)  # test_is_registered_under_its_name says why
        operations = [op for op in OPERATIONS if op in offered]
        if getattr(metafunc.function, "probes_too", False) and self.check_contacts_peer:
            operations.append("check")
        metafunc.parametrize("operation", operations)

    @pytest.fixture(autouse=True)
    def _no_secret_in_logs(self, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
        # what the server logs by default (urllib3 logs request lines at DEBUG)
        caplog.set_level(logging.INFO)
        yield
        records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
        lines = [caplog.handler.format(r) for r in records]  # with any traceback
        leaked = [line for line in lines if _reveals(line)]
        assert not leaked, f"the contract secret was logged: {leaked}"

    @pytest.fixture
    def build(self, make_contract_target: MakeTarget) -> Iterator[MakeTarget]:
        """``make_contract_target``, closing every target it made after the test."""
        made: list[TargetBackend[Any]] = []

        def build(address: str, timeout: float = TIMEOUT) -> TargetBackend[Any]:
            target = make_contract_target(address, timeout)
            made.append(target)
            return target

        yield build
        for target in made:
            target.close()

    @pytest.fixture
    def target(self, contract_peer: ContractPeer, build: MakeTarget) -> TargetBackend[Any]:
        """A target for the healthy peer."""
        return build(contract_peer.address, TIMEOUT)

    def _offers(self, target: TargetBackend[Any], capability: str) -> None:
        if capability not in type(target).capabilities():
            pytest.skip(f"{self.backend_name} does not offer {capability}")

    # -- the class and its options --------------------------------------------------------

    def test_is_registered_under_its_name(self, target: TargetBackend[Any]) -> None:
        cls = type(target)
        assert Registry().targets.load(self.backend_name) is cls
        offered = cls.capabilities()
        assert offered and offered <= set(OPERATIONS), offered
        if "details" in offered:
            assert "push" in offered, "details describe pushes: a target with details pushes"

    def test_the_options_hold_the_contract_secret(self, target: TargetBackend[Any]) -> None:
        # without it, the secrecy checks below would prove nothing
        assert any(CONTRACT_SECRET in text for text in _texts(target.options)), (
            "make_contract_target must put CONTRACT_SECRET in the target's secret option"
        )

    def test_validate_accepts_the_options_of_a_working_target(
        self, target: TargetBackend[Any]
    ) -> None:
        assert type(target).validate(target.options, target.target) == []

    def test_validate_rejects_bad_options_by_key(self, target: TargetBackend[Any]) -> None:
        cls = type(target)
        validates = _overrides(cls, "validate")
        if not validates:
            assert not self.invalid_options, f"{cls.__name__} does not override validate"
            return
        assert self.invalid_options, "a target that validates lists invalid_options to try"
        fields = {f.name for f in dataclasses.fields(cls.Options)}
        for options, expected in self.invalid_options:
            problems = cls.validate(options, target.target)
            assert isinstance(problems, list) and problems, options
            keys = set()
            for problem in problems:
                assert isinstance(problem, tuple) and len(problem) == 2, problem
                key, message = problem
                assert isinstance(key, str) and isinstance(message, str) and message.strip()
                assert key == "" or key.split(".")[0] in fields, f"{key!r} is not an option"
                secrets = [s.reveal() for s in _secrets(options) if s.reveal()]
                assert not [s for s in secrets if s in message], "a problem repeats a secret"
                assert not _reveals(message), "a problem shows the contract secret"
                keys.add(key)
            assert expected <= keys, (options, problems)

    # -- push ------------------------------------------------------------------------------

    def test_push_returns_an_id_helpspot_can_keep(self, target: TargetBackend[Any]) -> None:
        self._offers(target, "push")
        for request in (PUSHED, OTHER):
            _assert_push_id(target.push(request))

    def test_odd_requests_get_an_id_or_a_backend_error(self, target: TargetBackend[Any]) -> None:
        self._offers(target, "push")
        for name, request in ODD_REQUESTS.items():
            outcome = _attempt(partial(target.push, request), f"the {name} request")
            if isinstance(outcome, BackendError):
                _assert_fit_for_staff(outcome)
                assert not isinstance(outcome, BackendTimeout | NotFound), (name, outcome)
            else:
                _assert_push_id(outcome)

    def test_concurrent_calls_all_succeed(self, target: TargetBackend[Any]) -> None:
        # the server's threads share one target; each call must stand on its own
        offered = type(target).capabilities()
        calls: list[Callable[[], object]] = []
        if "push" in offered:
            calls += [lambda: _assert_push_id(target.push(PUSHED))] * 6
        if "webhook" in offered:
            calls += [lambda: target.deliver(WEBHOOK)] * 6
        with ThreadPoolExecutor(4) as pool:
            for future in [pool.submit(call) for call in calls]:
                future.result(timeout=TIMEOUT * 2)

    # -- details ---------------------------------------------------------------------------

    def test_details_describe_the_push(self, target: TargetBackend[Any]) -> None:
        self._offers(target, "details")
        details = target.details(target.push(PUSHED))
        _assert_details(details)
        shown = " ".join([details.title, *(value for _, value in details.rows)])
        told = [PUSHED.text(k) for k in ("sTitle", "sLastName", "sEmail")]
        assert any(text in shown for text in told), f"details show none of {told}: {details}"

    def test_details_work_from_another_instance(
        self, target: TargetBackend[Any], contract_peer: ContractPeer, build: MakeTarget
    ) -> None:
        # another server process, or the same one after a restart
        self._offers(target, "details")
        push_id = target.push(PUSHED)
        _assert_details(build(contract_peer.address, TIMEOUT).details(push_id))

    def test_details_of_an_unknown_id_is_not_found(self, target: TargetBackend[Any]) -> None:
        self._offers(target, "details")
        target.push(PUSHED)
        for push_id in self.unknown_push_ids:
            outcome = _attempt(partial(target.details, push_id))
            assert isinstance(outcome, NotFound), f"details({push_id!r}) gave {outcome!r}"
            _assert_fit_for_staff(outcome)

    # -- webhooks --------------------------------------------------------------------------

    def test_a_redelivered_webhook_is_accepted_again(self, target: TargetBackend[Any]) -> None:
        # the outbox delivers at least once: the same webhook (same id) may come twice
        self._offers(target, "webhook")
        target.deliver(WEBHOOK)
        target.deliver(WEBHOOK)
        target.deliver(Webhook(42, "c4a1f0e2-8d1b-4b7e-9a55-3f1e2d0c9b8a", {}))

    def test_odd_payloads_are_delivered_or_refused_with_a_backend_error(
        self, target: TargetBackend[Any]
    ) -> None:
        self._offers(target, "webhook")
        for number, (name, payload) in enumerate(ODD_PAYLOADS.items(), start=43):
            webhook = Webhook(number, f"odd-{name}", payload)
            outcome = _attempt(partial(target.deliver, webhook), f"the {name} payload")
            if isinstance(outcome, BackendError):
                _assert_fit_for_staff(outcome)

    def test_a_failed_delivery_succeeds_when_retried(
        self, target: TargetBackend[Any], contract_peer: ContractPeer
    ) -> None:
        self._offers(target, "webhook")
        contract_peer.fail("error")
        outcome = _attempt(lambda: target.deliver(WEBHOOK))
        assert isinstance(outcome, BackendError), "a failed delivery must raise to be retried"
        contract_peer.recover()
        target.deliver(WEBHOOK)

    # -- a peer that fails -----------------------------------------------------------------

    @pytest.mark.parametrize("failure", ANSWERED_FAILURES)
    def test_a_failing_peer_gives_a_backend_error_without_the_secret(
        self,
        target: TargetBackend[Any],
        contract_peer: ContractPeer,
        operation: str,
        failure: Failure,
    ) -> None:
        push_id = target.push(PUSHED) if operation == "details" else ""
        contract_peer.fail(failure)
        outcome = _attempt(lambda: _operate(target, operation, push_id))
        if isinstance(outcome, BackendError):
            _assert_fit_for_staff(outcome)
            assert not isinstance(outcome, NotFound), (
                f"{outcome!r} when the peer does {failure!r}: staff would be told it is gone"
            )
            return
        if operation == "details":  # from a record of its own, without the peer
            _assert_details(outcome)
        elif failure == "garbage":  # an answer the target does not need to read
            if operation == "push":
                _assert_push_id(outcome)
        else:
            raise AssertionError(
                f"{operation} succeeded against a peer that does {failure!r}: "
                + ("the webhook would be lost" if operation == "webhook" else f"{outcome!r}")
            )

    @_probing
    def test_a_hanging_peer_gives_backend_timeout_once_aborted(
        self, contract_peer: ContractPeer, build: MakeTarget, operation: str
    ) -> None:
        target = build(contract_peer.address, HANG_TIMEOUT)
        if not type(target).waits_on_network:
            pytest.skip(f"{self.backend_name} is called inline: the core never aborts it")
        push_id = target.push(PUSHED) if operation == "details" else ""
        contract_peer.fail("hang")
        outcome = _past_the_deadline(lambda: _operate(target, operation, push_id), HANG_TIMEOUT)
        if operation == "details" and not isinstance(outcome, BaseException):
            _assert_details(outcome)  # from a record of its own, without the peer
            return
        assert isinstance(outcome, BackendTimeout), (
            f"{operation} aborted at the deadline gave {outcome!r}, not BackendTimeout"
        )
        _assert_fit_for_staff(outcome)
        wait_for(lambda: contract_peer.open_connections == 0, "the connection was closed")

    def test_a_hanging_peer_gives_every_slot_back(
        self, contract_peer: ContractPeer, build: MakeTarget
    ) -> None:
        target = build(contract_peer.address, HANG_TIMEOUT)
        if not type(target).waits_on_network:
            pytest.skip(f"{self.backend_name} is called inline: the core never aborts it")
        served = as_target(target)
        offered = type(target).capabilities()

        def call() -> None:
            if "push" in offered:
                served.push(PUSHED)
            else:
                served.deliver(WEBHOOK)

        contract_peer.fail("hang")
        hang_every_slot(served, call)
        wait_for(lambda: contract_peer.open_connections == 0, "every connection was closed")
        contract_peer.recover()
        call()  # served, not "busy"

    # -- life cycle ----------------------------------------------------------------------------

    def test_check_passes_against_a_healthy_peer(self, target: TargetBackend[Any]) -> None:
        warnings = target.check()
        assert isinstance(warnings, list) and all(isinstance(w, str) for w in warnings)
        assert not [w for w in warnings if _reveals(w)], warnings

    def test_check_reports_a_dead_peer(
        self, target: TargetBackend[Any], contract_peer: ContractPeer
    ) -> None:
        contract_peer.fail("refuse")
        outcome = _attempt(target.check)
        if isinstance(outcome, BackendError):
            _assert_fit_for_staff(outcome)
            return
        assert not [w for w in outcome if _reveals(w)], outcome
        if self.check_contacts_peer:
            assert outcome, "check() found nothing wrong with a peer that refuses connections"

    def test_close_is_safe_twice(
        self, target: TargetBackend[Any], contract_peer: ContractPeer, build: MakeTarget
    ) -> None:
        unused = build(contract_peer.address, TIMEOUT)  # never used: nothing opened yet
        unused.close()
        unused.close()
        if "push" in type(target).capabilities():
            target.push(PUSHED)
        if "webhook" in type(target).capabilities():
            target.deliver(WEBHOOK)
        target.close()
        target.close()


# -- helpers ---------------------------------------------------------------------------------


def _operate(target: TargetBackend[Any], operation: str, push_id: str) -> object:
    if operation == "push":
        return target.push(PUSHED)
    if operation == "details":
        return target.details(push_id)
    if operation == "webhook":
        target.deliver(WEBHOOK)
        return None
    return target.check()


def _attempt(call: Callable[[], T], given: str = "") -> T | BackendError:
    """``call()``'s result or its BackendError; any other exception fails the case."""
    try:
        return call()
    except BackendError as exc:
        return exc
    except Exception as exc:
        pytest.fail(
            f"{f'given {given}, ' if given else ''}raised {type(exc).__name__}: {exc}; "
            "a target raises only BackendError (the core logs anything else as a crash)"
        )


def _past_the_deadline(call: Callable[[], object], timeout: float) -> object:
    """What ``call`` gave when run the way the core runs it, aborted at ``timeout``.

    The core answers the caller at the deadline; the call's thread must then come
    back within :data:`RETURN_BOUND`, else it holds a slot and a connection.
    """
    outcome: list[object] = []

    def recorded() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            outcome.append(exc)
            raise

    runner = DeadlineRunner("contract")
    try:
        runner.run(recorded, timeout)
    except TimeoutError:  # the core's answer at the deadline (or the call's own: recorded)
        wait_for(lambda: bool(outcome), "the aborted call came back", RETURN_BOUND)
    except Exception as exc:
        assert outcome[0] is exc
    return outcome[0]


def _assert_push_id(push_id: object) -> None:
    assert isinstance(push_id, str), f"push returned {push_id!r}, not a str"
    assert push_id, "push returned an empty id"
    assert len(push_id) <= MAX_ID_CHARS, f"HelpSpot keeps {MAX_ID_CHARS} characters of an id"
    assert push_id == push_id.strip(), f"{push_id!r} has blanks at its ends"
    assert not [c for c in push_id if unicodedata.category(c).startswith("C")], push_id
    assert not _reveals(push_id), "the push id holds the secret"


def _assert_details(details: object) -> None:
    assert isinstance(details, PushDetails), f"details gave {details!r}"
    assert isinstance(details.title, str) and details.title.strip(), details
    assert isinstance(details.rows, tuple), details
    for row in details.rows:
        assert isinstance(row, tuple) and len(row) == 2, row
        assert all(isinstance(part, str) for part in row), row
    assert isinstance(details.link, str), details
    assert not _reveals(repr(details)), "the details show the secret"


def _assert_fit_for_staff(exc: BackendError) -> None:
    text = str(exc)
    assert text.strip(), f"{type(exc).__name__} without a message"
    assert len(text) <= MAX_MESSAGE_CHARS, f"a message of {len(text)} characters: {text[:200]}"
    assert not _reveals(text) and not _reveals(repr(exc)), f"the message shows the secret: {text}"
    if isinstance(exc, DeliveryFailed):  # recorded in the outbox, shown by outbox show
        assert exc.status is None or 100 <= exc.status <= 599, exc.status
        assert isinstance(exc.answer, str) and len(exc.answer) <= ANSWER_EXCERPT_CHARS
        assert not _reveals(exc.answer), f"the peer's answer shows the secret: {exc.answer}"


def _reveals(text: str) -> bool:
    """True when ``text`` holds the contract secret or any long part of it."""
    last = len(CONTRACT_SECRET) - SECRET_WINDOW
    return any(CONTRACT_SECRET[i : i + SECRET_WINDOW] in text for i in range(last + 1))


def _texts(value: object) -> Iterator[str]:
    """Every text in an options dataclass, secrets revealed."""
    if isinstance(value, Secret):
        yield value.reveal()
    elif isinstance(value, str):
        yield value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _texts(getattr(value, f.name))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _texts(key)
            yield from _texts(item)
    elif isinstance(value, Iterable) and not isinstance(value, bytes):
        for item in value:
            yield from _texts(item)


def _secrets(options: object) -> list[Secret]:
    if not dataclasses.is_dataclass(options) or isinstance(options, type):
        return []
    values = [getattr(options, f.name) for f in dataclasses.fields(options)]
    return [v for v in values if isinstance(v, Secret)]


def _overrides(cls: type[TargetBackend[Any]], method: str) -> bool:
    return getattr(cls, method).__func__ is not getattr(TargetBackend, method).__func__
