"""Auth (service 6): accounts, sessions and login throttling, as durable actors.

    client      ``SessionVerifier`` (bearer-token checks, what every ingress
                needs), ``AuthClient`` (accounts, logins, passwords, sessions),
                ``Principal`` (who is calling)
    model       ``User``, ``Session``, ``Role`` (what the stores journal);
                tokens: ``new_token``, ``parse_token``, ``secret_matches``,
                ``hash_secret``, ``normalize_username``
    users       ``UserStore`` (accounts, reset tokens, throttling),
                ``UserStoreActor``, ``USERS_NAME``
    sessions    ``SessionStore`` (one shard of sessions, near-cache leases),
                ``SessionStoreActor``, ``SESSIONS_PREFIX``
    errors      ``InvalidCredentials``, ``TooManyAttempts``, ``UsernameTaken``,
                ``WrongPassword``, ``InvalidResetToken``
    settings    ``AuthSettings`` (``REALM_AUTH_*``)

Other services use only ``client``.
"""
