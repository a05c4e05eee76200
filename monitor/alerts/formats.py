"""Notification payloads, one builder per receiver `format`.

`generic` (version "1") is llm-monitor's own JSON schema, one alert per message:

    {
      "version": "1",
      "idempotency_key": "5f0c...",          # the same on every retry of this message
      "status": "firing",                    # firing | resolved
      "receiver": "ops-webhook",
      "alert": {
        "name": "high-ttft",                 # the rule
        "status": "firing",                  # firing | resolved (what this message announces)
        "state": "firing",                   # the alert's state when the message was written
        "labels": {"alertname": "high-ttft", "probe": "chat-hello", "target": "glm4", "severity": "critical", ...},
        "annotations": {"summary": "...", "description": "..."},
        "severity": "critical",              # info | warning | critical
        "value": 812.5,                      # the measured value (null when there is none)
        "threshold": 500.0,                  # what it was compared with (null when there is none)
        "started_at": "2026-11-25T10:00:00Z",  # when it started firing (RFC 3339, UTC)
        "ended_at": null,                    # when it resolved; null while firing
        "fingerprint": "3f1a9c0e5b7d2a64",   # stable id of the label set
        "probe": "chat-hello",
        "target": "glm4"
      },
      "generated_at": "2026-11-25T10:00:00.5Z",  # when the message was written (stable across retries)
      "external_url": "http://127.0.0.1:9464"
    }

`alertmanager` is Alertmanager's webhook payload, version 4, with one alert per message; the group
is the alert's rule and probe (doctor and drift alerts: rule, target, check or component). `slack`
is an incoming-webhook message (text + blocks); `feishu` an interactive card; `dingtalk` and
`wecom` markdown robot messages. Doctor and drift alerts name their check or component in the
title and facts instead of a probe; a drift `diff` annotation keeps one line per diff line.

The idempotency key travels in the `Idempotency-Key` header of every request. The generic payload
also has it as `idempotency_key`; the chat formats show it in their footer (`id ...`); the
alertmanager payload keeps exactly the v4 fields (use the header, or groupKey + fingerprint +
startsAt as Alertmanager receivers do).

Untrusted text. Annotations can quote the target (error messages, reply excerpts), so every
dynamic string is escaped for the format that renders it: Slack mrkdwn escapes `&`, `<`, `>`
(no links, no `<!channel>` mentions); DingTalk and WeCom markdown also backslash-escape link,
emphasis and code syntax and fold newlines; Feishu cards carry untrusted text only in
`plain_text` elements, which Feishu shows literally. The JSON formats (`generic`,
`alertmanager`) carry text as data; their consumers must escape it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from monitor.alerts.model import AlertSnapshot, Notification, deployment_key, iso
from monitor.alerts.rules import format_value

__all__ = [
    "ALERTMANAGER_ZERO_TIME",
    "FORMATS",
    "build_payload",
    "escape_markdown",
    "escape_slack",
]

# Alertmanager (Go's zero time.Time) says "not ended" this way.
ALERTMANAGER_ZERO_TIME = "0001-01-01T00:00:00Z"
# Text fields are capped so a long reply excerpt cannot push a message over a platform's size limit.
FIELD_MAX_CHARS = 1000
WECOM_MAX_BYTES = 4096

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]()~|#+!{}])")
_FIRING_COLORS = {"critical": "red", "warning": "orange", "info": "blue"}


def escape_slack(text: str) -> str:
    """Slack mrkdwn: the three characters Slack's docs require escaping (this also defuses links/mentions)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_markdown(text: str) -> str:
    """Markdown robots (DingTalk, WeCom): inert HTML, links, images, emphasis and code; one line."""
    text = " ".join(text[:FIELD_MAX_CHARS].splitlines())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _status(alert: AlertSnapshot) -> str:
    return "FIRING" if alert.status == "firing" else "RESOLVED"


def _title(alert: AlertSnapshot) -> str:
    key = deployment_key(alert.labels)
    if key is not None:
        return f"[{_status(alert)}] {alert.name} on {alert.target or '-'} ({key[1]})"
    probe = f" on {alert.probe}" if alert.probe else ""
    return f"[{_status(alert)}] {alert.name}{probe}"


def _facts(alert: AlertSnapshot) -> list[tuple[str, str]]:
    key = deployment_key(alert.labels)
    facts = [
        (key[0].capitalize(), key[1]) if key is not None else ("Probe", alert.probe or "-"),
        ("Target", alert.target or "-"),
        ("Severity", alert.severity),
        ("Value", f"{format_value(alert.value)} (threshold {format_value(alert.threshold)})"),
        ("Started", iso(alert.started_at) or "-"),
    ]
    if key is not None:
        del facts[3]  # doctor and drift alerts measure no value; their diff or fix is in the annotations
    if alert.status == "resolved":
        facts.append(("Resolved", iso(alert.ended_at) or "-"))
    return facts


def _texts(alert: AlertSnapshot) -> list[tuple[str, str]]:
    """Annotations to show: summary and description first, then the others."""
    keys: list[str] = [k for k in ("summary", "description") if k in alert.annotations]
    keys += sorted(k for k in alert.annotations if k not in ("summary", "description"))
    return [(k, alert.annotations[k][:FIELD_MAX_CHARS]) for k in keys if alert.annotations[k]]


def generic(n: Notification) -> dict[str, Any]:
    return {
        "version": "1",
        "idempotency_key": n.idempotency_key,
        "status": n.alert.status,
        "receiver": n.receiver,
        "alert": n.alert.to_json(),
        "generated_at": iso(n.created_at),
        "external_url": n.external_url or None,
    }


def _labelset(labels: dict[str, str]) -> str:
    # Prometheus' LabelSet.String(): {a="1", b="2"} with Go-quoted values, sorted by name.
    return "{" + ", ".join(f"{k}={_go_quote(labels[k])}" for k in sorted(labels)) + "}"


def _go_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def alertmanager(n: Notification) -> dict[str, Any]:
    alert = n.alert
    # Probe alerts group by rule and probe; doctor and drift alerts by rule, target and check or component.
    keys = ("alertname", "probe") if alert.probe else ("alertname", "target", "check", "component")
    group: dict[str, str] = {k: alert.labels[k] for k in keys if k in alert.labels}
    external = n.external_url or ""
    return {
        "version": "4",
        "groupKey": "{}:" + _labelset(group),
        "truncatedAlerts": 0,
        "status": alert.status,
        "receiver": n.receiver,
        "groupLabels": group,
        "commonLabels": dict(alert.labels),
        "commonAnnotations": dict(alert.annotations),
        "externalURL": external,
        "alerts": [
            {
                "status": alert.status,
                "labels": dict(alert.labels),
                "annotations": dict(alert.annotations),
                "startsAt": iso(alert.started_at) or ALERTMANAGER_ZERO_TIME,
                "endsAt": iso(alert.ended_at)
                if alert.status == "resolved" and alert.ended_at
                else ALERTMANAGER_ZERO_TIME,
                "generatorURL": f"{external.rstrip('/')}/api/v1/alerts" if external else "",
                "fingerprint": alert.fingerprint,
            }
        ],
    }


def slack(n: Notification) -> dict[str, Any]:
    alert = n.alert
    icon = ":red_circle:" if alert.status == "firing" else ":large_green_circle:"
    summary = alert.annotations.get("summary", "")
    text = f"{icon} {escape_slack(_title(alert))}" + (f": {escape_slack(summary[:FIELD_MAX_CHARS])}" if summary else "")
    body = "\n".join(f"*{escape_slack(k.capitalize())}:* {escape_slack(v)}" for k, v in _texts(alert))
    blocks: list[dict[str, Any]] = [
        # plain_text is shown literally by Slack; the header caps at 150 characters.
        {"type": "header", "text": {"type": "plain_text", "text": _title(alert)[:150], "emoji": True}},
    ]
    if body:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": body[:2900]}})
    blocks.append(
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": f"*{k}:*\n{escape_slack(v)}"} for k, v in _facts(alert)],
        }
    )
    context = f"fingerprint {alert.fingerprint} · id {escape_slack(n.idempotency_key)}"
    if n.external_url and re.fullmatch(r"https?://[^\s<>|]+", n.external_url):
        context += f" · <{n.external_url}|llm-monitor>"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {"text": text, "blocks": blocks}


def _plain(text: str) -> dict[str, str]:
    return {"tag": "plain_text", "content": text}


def feishu(n: Notification) -> dict[str, Any]:
    alert = n.alert
    color = "green" if alert.status == "resolved" else _FIRING_COLORS.get(alert.severity, "red")
    elements: list[dict[str, Any]] = [{"tag": "div", "text": _plain(f"{k}: {v}")} for k, v in _texts(alert)]
    elements.append(
        {"tag": "div", "fields": [{"is_short": True, "text": _plain(f"{k}: {v}")} for k, v in _facts(alert)]}
    )
    footer = f"fingerprint {alert.fingerprint} · id {n.idempotency_key} · {n.external_url}"
    elements.append({"tag": "note", "elements": [_plain(footer)]})
    return {
        "msg_type": "interactive",
        "card": {
            "config": {"wide_screen_mode": True},
            "header": {"template": color, "title": _plain(_title(alert))},
            "elements": elements,
        },
    }


def _markdown_lines(n: Notification) -> list[str]:
    alert = n.alert
    lines: list[str] = []
    for k, v in _texts(alert):
        if k == "diff":
            # One markdown line per diff line (each escaped), so -old and +new stay apart.
            lines += [f"**{escape_markdown(k.capitalize())}:**", *(escape_markdown(line) for line in v.splitlines())]
        else:
            lines.append(f"**{escape_markdown(k.capitalize())}:** {escape_markdown(v)}")
    lines += [f"**{k}:** {escape_markdown(v)}" for k, v in _facts(alert)]
    lines.append(f"fingerprint {alert.fingerprint} · id {escape_markdown(n.idempotency_key)}")
    return lines


def dingtalk(n: Notification) -> dict[str, Any]:
    alert = n.alert
    text = "\n\n".join([f"### {escape_markdown(_title(alert))}", *_markdown_lines(n)])
    # The title is only shown in the chat list preview, as plain text.
    return {"msgtype": "markdown", "markdown": {"title": _title(alert)[:100], "text": text}}


def wecom(n: Notification) -> dict[str, Any]:
    alert = n.alert
    color = "info" if alert.status == "resolved" else "warning"
    head = f'<font color="{color}">{escape_markdown(_title(alert))}</font>'
    content = "\n".join([head, *(f"> {line}" for line in _markdown_lines(n))])
    encoded = content.encode("utf-8")
    if len(encoded) > WECOM_MAX_BYTES:
        # Cut on a character boundary; WeCom rejects longer markdown content outright.
        content = encoded[: WECOM_MAX_BYTES - 3].decode("utf-8", errors="ignore") + "..."
    return {"msgtype": "markdown", "markdown": {"content": content}}


FORMATS: dict[str, Callable[[Notification], dict[str, Any]]] = {
    "generic": generic,
    "alertmanager": alertmanager,
    "slack": slack,
    "feishu": feishu,
    "dingtalk": dingtalk,
    "wecom": wecom,
}


def build_payload(fmt: str, notification: Notification) -> dict[str, Any]:
    """The JSON body for a receiver of format `fmt` (before any platform signing fields)."""
    try:
        builder = FORMATS[fmt]
    except KeyError:
        raise ValueError(f"unknown receiver format {fmt!r}") from None
    return builder(notification)
