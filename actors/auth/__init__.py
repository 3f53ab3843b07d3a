"""Auth (service 6): accounts, sessions, API keys, tickets and throttling, as durable actors.

    client      ``SessionVerifier`` (bearer-credential checks and ticket
                redemption, what every ingress needs), ``AuthClient``
                (accounts, logins, passwords, sessions, API keys, tickets,
                the admin account), ``Principal`` (who is calling)
    model       ``User``, ``Session``, ``ApiKey``, ``Role`` (what the stores
                journal); credentials, told apart by shape: session tokens
                (``new_token``, ``parse_token``), API keys ``rk_...``
                (``new_api_key``, ``parse_api_key``), tickets ``rt_...``
                (``new_ticket``, ``parse_ticket``); ``secret_matches``,
                ``hash_secret``, ``normalize_username``
    users       ``UserStore`` (accounts, the admin, reset tokens, throttling
                and per-address limits), ``UserStoreActor``, ``USERS_NAME``
    sessions    ``SessionStore`` (one shard of sessions and API keys, with
                near-cache leases, and tickets), ``SessionStoreActor``,
                ``SESSIONS_PREFIX``
    bootstrap   ``python -m actors.auth.bootstrap``: make or reset the admin
                account, or print a password hash for the settings
    errors      ``InvalidCredentials``, ``TooManyAttempts``, ``UsernameTaken``,
                ``WrongPassword``, ``InvalidResetToken``
    settings    ``AuthSettings`` (``REALM_AUTH_*``)

Other services use only ``client``.
"""
