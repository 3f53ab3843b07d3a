"""Pub/sub (service 5): topics with sequence numbers, history and wildcard fan-out.

- ``client``: the public face, for other services and for ``apps.pubsub``:
  ``PubSubClient`` (publish, history, subscribe, request/reply),
  ``Subscription``, ``SlowConsumer``, and re-exported ``Message``, ``NoReply``,
  ``INBOX``, ``Acl``, ``load_hook``, ``check_topic``, ``check_pattern``, ``matches``.
- ``broker``: ``Broker`` (one shard of topics: numbering, bounded history,
  followers' mailboxes; ``Durable``), ``BrokerActor``, ``BROKER_PREFIX``,
  ``Message``, ``check_group``.
- ``topics``: subjects and patterns (``check_topic``, ``check_pattern``,
  ``matches``) and ``SubscriptionIndex``, the pattern trie.
- ``settings``: ``PubSubSettings``, the ``REALM_PUBSUB_*`` section.
- ``acl``: ``Acl``, who may publish to and read which topics (``load_hook``).
- ``errors``: ``NoReply``.
"""
