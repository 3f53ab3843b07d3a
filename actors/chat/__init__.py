"""Chat (service 3): rooms, messages, presence and live delivery.

- ``client``: the public face, for ``apps.chat`` and other services:
  ``ChatClient`` (rooms, membership, moderation, messages, history, search,
  and ``open``/``catch_up``/``close_watch`` for live connections), ``Watch``,
  ``Feed``, ``Post``, ``Event``, ``UserDirectory``.
- ``shard``: ``ChatShard`` (many rooms: the API a client calls, presence,
  typing, fan-out to followers), ``ChatShardActor``, ``SHARD_PREFIX``.
- ``book``: ``RoomBook``, the shard's durable half (``Durable``: every
  ``apply_<op>``, the indexes, the snapshot).
- ``room``: ``Room``, one room's state and rules (roles, invitations, bans,
  mutes, slow mode, history and its trimming, search).
- ``presence``: ``Presence`` (devices, expiry, batched diffs; ephemeral).
- ``followers``: ``Followers`` (the replicas following each room, mailboxes).
- ``notify``: ``MentionNotifier`` and ``PushMentions`` (a mention is a push
  notification to every device of the mentioned user).
- ``ratelimit``: ``UserRates`` (a token bucket per user).
- ``model``: events, messages, members, input rules.
- ``settings``: ``ChatSettings``, the ``REALM_CHAT_*`` section.
- ``errors``: ``RoomNotFound``, ``NotAMember``, ``Banned``, ``Muted``,
  ``SlowMode``, ``RoomFull``, ``RoomArchived``, ``NotAllowed``, ``MessageNotFound``.
"""
