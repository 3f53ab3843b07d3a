"""``PushMentions``: a mention becomes one push notification to the mentioned user."""

from __future__ import annotations

from typing import Any

from actors.chat.notify import EXCERPT_CHARS, Mention, PushMentions
from actors.runtime.settings import Settings


class FakePush:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def send(self, sender: str, **options: Any) -> dict[str, Any]:
        self.sent.append((sender, options))
        return {"id": "n1", "duplicate": False}

    async def close(self) -> None:
        return None


def mention(user: str = "bob", seq: int = 7, room: str = "r1") -> Mention:
    return Mention(user, room, "general", seq, 1.5, "ann", "Ann", "hey @bob " + "x" * 300)


async def test_a_mention_is_a_privileged_push_to_the_user_keyed_by_room_seq_and_user() -> None:
    push = FakePush()
    notifier = PushMentions(Settings(), push)  # type: ignore[arg-type]
    await notifier.notify(mention())
    await notifier.notify(mention())  # the same mention again: the same key
    await notifier.notify(mention(user="carol"))
    await notifier.notify(mention(seq=8))
    (sender, options) = push.sent[0]
    assert len(push.sent) == 4
    assert sender == "ann" and options["to"] == {"user": "bob"} and options["privileged"]
    assert options["title"] == "Ann mentioned you in general"
    assert options["body"] == ("hey @bob " + "x" * 300)[:EXCERPT_CHARS]
    data = options["data"]
    assert (data["type"], data["room"], data["seq"]) == ("mention", "r1", 7)
    assert data["from"] == {"user_id": "ann", "username": "Ann"}
    assert data["excerpt"] == options["body"]
    keys = [o["idempotency_key"] for _, o in (push.sent)]
    assert keys[0] == keys[1] and len(set(keys)) == 3
    assert all(len(k) <= 64 and k.startswith("chat-mention:") for k in keys)
    await notifier.close()
