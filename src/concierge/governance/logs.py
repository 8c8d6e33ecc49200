"""Personal data and API keys kept out of log files.

The log handlers belong to the process; :class:`LogRedactor` sits on them and masks every
record with the recognisers of the server whose work logged it (set per request by
:func:`logging_with`, from the server's middleware), so two servers in one process each mask
with their own. API keys in a logged line keep only their start.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from concierge.governance.pii import Detector

# The detector of the server whose work is running (set per request by that server's
# middleware, so two servers in one process each mask with their own recognisers).
_log_detector: ContextVar[Detector | None] = ContextVar("concierge_log_detector", default=None)


@contextmanager
def logging_with(detector: Detector) -> Iterator[None]:
    """Within this block (and tasks started in it), log lines are masked with ``detector``."""
    token = _log_detector.set(detector)
    try:
        yield
    finally:
        _log_detector.reset(token)


class LogRedactor(logging.Filter):
    """Masks personal data in log records (message and arguments) before any handler sees
    them. Installed on the handlers of the server's loggers: personal data never reaches
    a log file, whatever the policy says about storage.

    It masks with its own ``detector`` if given, else with the detector of the server whose
    work logged the line (:func:`logging_with`), else with the built-in recognisers (a line
    logged outside any server's work: start-up, uvicorn's access log)."""

    def __init__(self, detector: Detector | None = None) -> None:
        super().__init__()
        self.detector = detector
        self._builtin: Detector | None = None

    def _current(self) -> Detector:
        if self.detector is not None:
            return self.detector
        active = _log_detector.get()
        if active is not None:
            return active
        if self._builtin is None:
            self._builtin = Detector()
        return self._builtin

    def filter(self, record: logging.LogRecord) -> bool:
        # Arguments are masked one by one, keeping their shape: formatters such as uvicorn's
        # access log unpack them (client address, method, path, ...).
        detector = self._current()
        if isinstance(record.msg, str):
            record.msg = _no_keys(detector.redact(record.msg)[0])
        if isinstance(record.args, tuple):
            record.args = tuple(self._mask(detector, a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: self._mask(detector, v) for k, v in record.args.items()}
        return True

    @staticmethod
    def _mask(detector: Detector, value: Any) -> Any:
        return _no_keys(detector.redact(value)[0]) if isinstance(value, str) else value


# An API key in a logged line (a URL a client put one in, say) keeps only its start.
_API_KEY = re.compile(r"(sk-cc-)[A-Za-z0-9_\-%]{4,}")


def _no_keys(text: str) -> str:
    return _API_KEY.sub(r"\1[redacted]", text) if "sk-cc-" in text else text


def install_log_redaction() -> None:
    """Put a :class:`LogRedactor` on every handler of the root, uvicorn and concierge loggers
    (idempotent). The handlers belong to the process; the redactor masks each line with the
    recognisers of the server whose work logged it (:func:`logging_with`)."""
    for name in ("", "uvicorn", "uvicorn.access", "uvicorn.error", "concierge"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, LogRedactor) for f in handler.filters):
                handler.addFilter(LogRedactor())
