"""JSON logs (``[server] log_format = "json"``): one line per HelpSpot call, every line JSON.

A call's line holds exactly its CallRecord's fields, with ``time`` and
``level``; every other line holds ``time``, ``level``, ``logger`` and
``message``. So a log shipper reads one format from the whole server.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

from lookup_server.telemetry import CallRecord, Telemetry

#: The logger of the call lines.
CALL_LOGGER = "lookup_server.calls"
#: The LogRecord attribute that holds a line's own fields (a dict of plain values);
#: the key filter (web/access_log.py) hides keys in its strings too.
FIELDS = "json_fields"

log = logging.getLogger(CALL_LOGGER)


class JsonCallLog(Telemetry):
    """Logs each HelpSpot call as one JSON line (through JsonFormatter)."""

    def call(self, record: CallRecord) -> None:
        """Log the call's record."""
        if log.isEnabledFor(logging.INFO):
            log.info(
                "%s %s: %s (%d)",
                record.endpoint,
                record.name,
                record.outcome,
                record.status,
                extra={FIELDS: record.as_dict()},
            )


class JsonFormatter(logging.Formatter):
    """Formats every log record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        """The record's own fields, else its logger and message; with time and level."""
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
        }
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            line.update(fields)
        else:
            message = record.getMessage()
            if record.exc_info and not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
            if record.exc_text:
                message = f"{message}\n{record.exc_text}"
            if record.stack_info:
                message = f"{message}\n{self.formatStack(record.stack_info)}"
            line.update(logger=record.name, message=message)
        # ensure_ascii: a line is plain ASCII, whatever the caller's bytes were
        return json.dumps(line, default=str)
