"""Who may publish to and read which pub/sub topics.

Built-in rules, checked first:

- every caller is a signed-in user (the routes require one);
- topics under ``user.<id>.`` are private to the user with that id: only they
  may publish there or subscribe to a pattern naming them; a wildcard pattern
  that could reach them (``>``, ``user.*.inbox``) is allowed, but a message on
  another user's private topic is never delivered to it;
- reply topics (``_inbox.``) may be published to (that is how a request is
  answered) but not subscribed to, nor delivered to wildcard subscriptions:
  only the client that made the request reads its replies.

Then the hook, if ``REALM_PUBSUB_ACL_HOOK`` names one (``module:function``),
is called as ``hook(user, action, subject)`` with action ``"publish"`` and a
topic, or ``"subscribe"`` and a pattern; False refuses with 403.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from actors.auth.client import Principal
from actors.pubsub.topics import INBOX, ONE, REST, check_pattern, check_topic
from actors.runtime.errors import Forbidden

Hook = Callable[[Principal, str, str], bool]

PRIVATE = "user"


def load_hook(path: str) -> Hook | None:
    """The function ``module:function`` names; None for an empty path."""
    if not path:
        return None
    module, _, name = path.partition(":")
    if not module or not name:
        raise ValueError(f"an ACL hook is 'module:function', not {path!r}")
    hook = getattr(importlib.import_module(module), name)
    if not callable(hook):
        raise ValueError(f"the ACL hook {path!r} is not callable")
    return hook


class Acl:
    def __init__(self, hook: Hook | None = None) -> None:
        self.hook = hook

    def _ask_hook(self, user: Principal, action: str, subject: str) -> None:
        if self.hook is not None and not self.hook(user, action, subject):
            raise Forbidden(f"not allowed to {action} here", subject=subject)

    def check_publish(self, user: Principal, topic: str) -> None:
        tokens = check_topic(topic)
        if len(tokens) > 2 and tokens[0] == PRIVATE and tokens[1] != user.user_id:
            raise Forbidden("topics under user.<id>. are private to that user", topic=topic)
        self._ask_hook(user, "publish", topic)

    def check_subscribe(self, user: Principal, pattern: str) -> None:
        tokens = check_pattern(pattern)
        if tokens[0] == INBOX:
            raise Forbidden("reply topics are read only by the client that asked", pattern=pattern)
        if (
            len(tokens) > 2
            and tokens[0] == PRIVATE
            and tokens[1] not in (ONE, REST)
            and tokens[1] != user.user_id
        ):
            raise Forbidden("topics under user.<id>. are private to that user", pattern=pattern)
        self._ask_hook(user, "subscribe", pattern)

    def check_read(self, user: Principal, topic: str) -> None:
        """For history: the same rules as subscribing to exactly ``topic``."""
        self.check_subscribe(user, topic)

    def may_read(self, user: Principal, topic: str) -> bool:
        """Whether a message on ``topic`` may be delivered to ``user``'s wildcard subscription."""
        head, _, rest = topic.partition(".")
        if head == INBOX:
            return False
        return head != PRIVATE or "." not in rest or rest.partition(".")[0] == user.user_id
