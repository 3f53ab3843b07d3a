"""Who may publish to and read which pub/sub topics.

Built-in rules, checked first:

- every caller is a principal (a signed-in user, or an API key acting for its
  user; the routes require one, with the scope ``pubsub:publish`` or
  ``pubsub:subscribe``);
- topics under ``user.<id>.`` are private to the user with that id: only they
  may publish there or subscribe to a pattern naming them; a wildcard pattern
  that could reach them (``>``, ``user.*.inbox``) is allowed, but a message on
  another user's private topic is never delivered to it;
- reply topics (``_inbox.``) are never subscribed to, nor delivered to wildcard
  subscriptions. A request's reply topic is ``_inbox.<replica>.<token>`` with a
  random token that only the request's addressees learn (it travels as the
  request's ``reply_to``): publishing to a reply topic is allowed in that shape
  only, is always ephemeral, and reaches the requester only if it names a
  request still waiting there. Knowing the token is the right to reply;
- a message's ``reply_to`` must be a topic its publisher may publish to itself,
  so a responder is never made to write where the requester could not.

Then the hook, if ``REALM_PUBSUB_ACL_HOOK`` names one (``module:function``),
is called as ``hook(user, action, subject)`` with action ``"publish"`` and a
topic, or ``"subscribe"`` and a pattern; False refuses with 403. Deliveries
ask it too: a message reaches a subscription only if the hook lets its owner
subscribe to exactly that topic (asked once per topic and stream, see
``reader``), so a wide pattern the hook allowed never carries a topic it
would refuse.
"""

from __future__ import annotations

import importlib
import logging
from collections import OrderedDict
from collections.abc import Callable

from actors.auth.client import Principal
from actors.pubsub.topics import INBOX, ONE, REST, check_pattern, check_topic
from actors.runtime.errors import Forbidden

log = logging.getLogger(__name__)

Hook = Callable[[Principal, str, str], bool]

PRIVATE = "user"
#: Topics whose answer one reader (one subscription) remembers.
READER_TOPICS = 1_024


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
        if tokens[0] == INBOX and len(tokens) != 3:
            raise Forbidden(
                "reply topics are _inbox.<replica>.<token>, as a request gives them",
                topic=topic,
            )
        if len(tokens) > 2 and tokens[0] == PRIVATE and tokens[1] != user.user_id:
            raise Forbidden("topics under user.<id>. are private to that user", topic=topic)
        self._ask_hook(user, "publish", topic)

    def check_reply_to(self, user: Principal, reply_to: str | None) -> None:
        """A message's reply topic: one its publisher may publish to itself."""
        if reply_to is not None:
            self.check_publish(user, reply_to)

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
        """Whether a message on ``topic`` may be delivered to ``user``'s subscription."""
        head, _, rest = topic.partition(".")
        if head == INBOX:
            return False
        if head == PRIVATE and "." in rest and rest.partition(".")[0] != user.user_id:
            return False
        if self.hook is None:
            return True
        try:
            return bool(self.hook(user, "subscribe", topic))
        except Exception:  # a hook that fails refuses, and is logged
            log.exception("the pub/sub ACL hook failed on a delivery; the message is withheld")
            return False

    def reader(self, user: Principal) -> Callable[[str], bool]:
        """``may_read`` for one subscription of ``user``, remembering the hook's answer
        for the last ``READER_TOPICS`` topics (the built-in rules cost nothing)."""
        if self.hook is None:
            return lambda topic: self.may_read(user, topic)
        answers: OrderedDict[str, bool] = OrderedDict()

        def may_read(topic: str) -> bool:
            answer = answers.get(topic)
            if answer is None:
                answer = answers[topic] = self.may_read(user, topic)
                if len(answers) > READER_TOPICS:
                    answers.popitem(last=False)
            return answer

        return may_read
