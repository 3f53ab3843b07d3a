"""Settings of the push service: ``REALM_PUSH_*`` variables (``docs/configuration.md``)."""

from __future__ import annotations

from pydantic import Field

from actors.runtime.settings import Section


class PushSettings(Section, service="push"):
    """Push notifications: read once, where the client and the shards are made."""

    shards: int = Field(4, ge=1, le=256)
    """Push shard actors (devices, outboxes and inboxes, keyed by user id)."""

    max_devices_per_user: int = Field(20, ge=1, le=1_000)
    """Devices one user may register; one more is refused (403 ``limit_reached``)."""

    max_topics_per_device: int = Field(32, ge=0, le=1_000)
    """Topics one device may follow."""

    max_token_bytes: int = Field(4_096, ge=64, le=65_536)
    """Largest device token, Web Push endpoint or webhook URL."""

    max_payload_bytes: int = Field(4_096, ge=256, le=65_536)
    """Largest notification (title, body and data as JSON); FCM and APNs take 4 KiB."""

    max_segment_users: int = Field(10_000, ge=1, le=10_000)
    """Most users one segment send names."""

    max_deliveries_per_send: int = Field(50_000, ge=1, le=1_000_000)
    """Most devices one send reaches (a larger topic or segment is refused: 413)."""

    max_ttl_s: float = Field(28 * 86_400.0, gt=0, le=28 * 86_400.0)
    """Longest TTL a notification may ask for (FCM's and Web Push's ceiling, 4 weeks)."""

    default_ttl_s: float = Field(86_400.0, gt=0, le=28 * 86_400.0)
    """TTL of a notification that gives none."""

    max_notifications_kept: int = Field(10_000, ge=10, le=1_000_000)
    """Finished notifications (with their per-device results) one shard keeps to be read
    by id; the oldest are forgotten first."""

    results_ttl_s: float = Field(86_400.0, gt=0)
    """How long a finished notification's results stay readable."""

    max_pending_per_shard: int = Field(50_000, ge=1, le=10_000_000)
    """Notifications not finished yet one shard holds; a send beyond it is a 429."""

    user_quota_per_min: int = Field(10_000, ge=1)
    """Deliveries (devices reached) one sender may ask for per minute (429 beyond)."""

    app_quota_per_min: int = Field(600_000, ge=1)
    """Deliveries to one app's devices per minute over the whole service (each shard
    enforces its share); FCM allows 600k messages a minute per project."""

    batch_size: int = Field(500, ge=1, le=10_000)
    """Devices one delivery job carries (one provider per job)."""

    send_concurrency: int = Field(64, ge=1, le=10_000)
    """Requests one delivery job has in flight to its provider at once."""

    max_attempts: int = Field(5, ge=1, le=50)
    """Attempts per device on 429, 5xx and timeouts before it is reported failed."""

    retry_base_s: float = Field(0.5, ge=0, le=60)
    """Retry n waits a random time up to min(base * 2^(n-1), ``retry_max_s``) (full jitter),
    or what the provider's ``Retry-After`` says if longer."""

    retry_max_s: float = Field(60.0, ge=0, le=3_600)
    """Longest wait between attempts (a ``Retry-After`` beyond it ends the attempts)."""

    request_timeout_s: float = Field(10.0, gt=0, le=120)
    """Timeout of one request to a provider (a timeout counts as retryable)."""

    delivery_deadline_s: float = Field(600.0, gt=0, le=86_400)
    """A device not reported within this long of the send (and its TTL) is reported
    failed (``lost``): no accepted notification stays unanswered."""

    inbox_max: int = Field(100, ge=1, le=10_000)
    """In-app notifications an offline device's inbox keeps (oldest dropped first)."""

    inbox_max_bytes: int = Field(256 * 1024, ge=1_024, le=64 * 1024 * 1024)
    """Bytes an in-app device's inbox keeps (oldest dropped first)."""

    in_app_topic: str = "push"
    """In-app notifications are published on pub/sub ``user.<id>.<in_app_topic>``."""

    allow_private_addresses: bool = False
    """Whether webhook and Web Push endpoints may be loopback or private addresses (tests
    set it; off, such an endpoint is refused at registration and before each send)."""

    vapid_private_key: str = ""
    """VAPID private key (PEM, or base64url raw) signing Web Push requests (RFC 8292)."""

    vapid_subject: str = "mailto:push@realm.invalid"
    """VAPID ``sub`` claim: a mailto: or https: contact for push services."""

    fcm_project_id: str = ""
    """Firebase project id of FCM HTTP v1 sends."""

    fcm_credentials_file: str = ""
    """Service account JSON (``client_email``, ``private_key``, ``token_uri``) for FCM."""

    fcm_endpoint: str = "https://fcm.googleapis.com"
    """FCM HTTP v1 base URL (tests point it at a stand-in)."""

    apns_key_file: str = ""
    """APNs token-signing key (.p8, ES256)."""

    apns_key_id: str = ""
    """APNs key id (the JWT's ``kid``)."""

    apns_team_id: str = ""
    """Apple developer team id (the JWT's ``iss``)."""

    apns_topic: str = ""
    """The app's bundle id (``apns-topic``)."""

    apns_endpoint: str = "https://api.push.apple.com"
    """APNs base URL (``https://api.sandbox.push.apple.com`` for development; tests point
    it at a stand-in, which may be ``http://`` for HTTP/2 without TLS)."""
