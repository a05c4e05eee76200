"""Alerting: rules -> alert states -> durable outbox -> webhook receivers.

    source.py    window aggregates (WindowSource, RawWindowSource) and raw recent history
    rules.py     pure condition checks and annotation templates
    state.py     the pure state machine (inactive -> pending -> firing -> resolved)
    muting.py    silences and maintenance windows
    repo.py      alert_states and silences queries
    engine.py    AlertEngine: evaluation, persistence, notifications into the outbox
    outbox.py    the durable outbox
    formats.py   payloads per receiver format; signing.py: HMAC signatures
    webhook.py   one signed request; dispatch.py: Dispatcher (claims, retries, order per alert)

Their config (rules:, receivers:, maintenance:) is monitor.config.alerts: this package imports
monitor.config, never the reverse. Nothing is re-exported here, so importing one module stays cheap.
"""
