"""``lookup-server check``: probe every configured source, bounded by its timeout."""

from __future__ import annotations

from collections.abc import Iterator

from lookup_server.backend import BackendError
from lookup_server.config import Config
from lookup_server.service import DeadlineRunner, ServiceError, create_backend


def probe_all(config: Config) -> Iterator[tuple[str, bool]]:
    """One report line per source (and per warning), with whether the source can serve."""
    for name, source_config in config.sources.items():
        capabilities = ", ".join(sorted(source_config.backend_class.capabilities()))
        label = f"sources.{name} ({source_config.settings.backend}: {capabilities})"
        backend = create_backend(source_config)
        runner = DeadlineRunner(name, max_in_flight=1)
        timeout = source_config.settings.timeout
        try:
            warnings = runner.run(backend.check, timeout)
        except TimeoutError:
            yield f"FAIL {label}: no answer within {timeout:g} s", False
            continue
        except (BackendError, ServiceError) as exc:
            yield f"FAIL {label}: {exc}", False
            continue
        finally:
            backend.close()
        yield f"ok   {label}", True
        for warning in warnings:
            yield f"     warning: {warning}", True
