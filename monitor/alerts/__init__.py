"""Alerting: rules -> alert states -> durable outbox -> webhook receivers.

    config.py    rules:, receivers:, maintenance: (pydantic; imported by monitor.settings)
    source.py    window aggregates (WindowSource, RawWindowSource) and raw recent history
    rules.py     pure condition checks and annotation templates
    state.py     the pure state machine (inactive -> pending -> firing -> resolved)
    muting.py    silences and maintenance windows
    repo.py      alert_states and silences queries
    engine.py    AlertEngine: evaluation, persistence, notifications into the outbox
    outbox.py    the durable outbox
    formats.py   payloads per receiver format; signing.py: HMAC signatures
    webhook.py   one signed request; dispatch.py: Dispatcher (claims, retries, order per alert)

Nothing is re-exported here: monitor.settings imports monitor.alerts.config, and the engine
modules import monitor.settings, so this package's __init__ must stay import-free.
"""
