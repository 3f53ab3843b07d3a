"""Errors of the monitoring service (codes and HTTP statuses in the envelope)."""

from __future__ import annotations

from actors.runtime.errors import InvalidInput, LimitReached, NotFound


class RuleNotFound(NotFound):
    """No such rule (or it belongs to someone else)."""

    code = "rule_not_found"


class SilenceNotFound(NotFound):
    """No such silence (or it belongs to someone else)."""

    code = "silence_not_found"


class AlertNotFound(NotFound):
    """No such alert (or it belongs to someone else, or it resolved)."""

    code = "alert_not_found"


class ReceiverNotFound(NotFound):
    """No such receiver (or it belongs to someone else)."""

    code = "receiver_not_found"


class BadRule(InvalidInput):
    """The rule, route, matcher or template does not parse or breaks a limit."""

    code = "bad_rule"


class BadTarget(InvalidInput):
    """A webhook or scrape URL that is not allowed (only loopback unless configured)."""

    code = "bad_target"


class MonitorLimit(LimitReached):
    """The owner already holds as many rules, silences, receivers or targets as allowed."""

    code = "monitor_limit"
