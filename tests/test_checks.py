from __future__ import annotations

from typing import Any

import pytest

from monitor.checks import check_run_on, check_template_leak, cjk_ratio, run_checks
from monitor.config import ProbeSettings
from monitor.meter import StreamMeasurement


def _m(text: str = "你好！很高兴见到你。", finish: str | None = "stop", **kw: Any) -> StreamMeasurement:
    fields: dict[str, Any] = {
        "endpoint": "chat", "stream": True, "text": text, "ttft_ms": 12.0, "latency_ms": 40.0, "itl_ms": (1.0, 2.0),
        "chunk_count": 4, "content_chunk_count": 3, "prompt_tokens": 6, "completion_tokens": 5,
        "tokens_estimated": False, "itl_per_token_exact": False, "finish_reason": finish, "stop_reason": None,
        "done_seen": True, "error_kind": None, "error_detail": None,
    }  # fmt: skip
    fields.update(kw)
    return StreamMeasurement(**fields)


def _probe(endpoint: str = "chat", **kw: Any) -> ProbeSettings:
    shape = {"messages": [{"role": "user", "content": "你好"}]} if endpoint == "chat" else {"prompt": "你好"}
    return ProbeSettings.model_validate({"name": "p", "target": "t", "endpoint": endpoint, **shape, **kw})


def _by_name(checks: Any) -> dict[str, Any]:
    return {c.name: c for c in checks}


def test_healthy_reply_passes_everything() -> None:
    checks = run_checks(_probe(), _m())
    assert all(c.passed for c in checks), checks
    assert [c.name for c in checks] == [
        "truncated",
        "template_leak",
        "run_on",
        "empty_reply",
        "think_leak",
        "answer_empty",
    ]


def test_truncation_fails_chat_and_names_max_tokens() -> None:
    c = _by_name(run_checks(_probe(max_tokens=7), _m(finish="length", completion_tokens=7)))["truncated"]
    assert not c.passed
    assert "max_tokens=7 was the cause (7 tokens generated)" in c.detail


def test_truncation_of_a_run_on_reply_blames_the_stop_tokens() -> None:
    text = "你好！\n用户：你还能做什么？\n助手：很多事。"
    c = _by_name(run_checks(_probe(max_tokens=512), _m(text=text, finish="length", completion_tokens=512)))
    assert not c["truncated"].passed and not c["run_on"].passed
    assert "ran on into the next turn until max_tokens=512" in c["truncated"].detail
    assert "raise it" not in c["truncated"].detail


def test_truncation_without_max_tokens_explains_the_default() -> None:
    c = _by_name(run_checks(_probe("completion"), _m(finish="length", endpoint="completion")))["truncated"]
    assert c.passed and "recorded" in c.detail and "defaults to 16" in c.detail


def test_truncation_on_completion_fails_only_when_expect_wants_stop() -> None:
    probe = _probe("completion", max_tokens=7, expect={"finish_reason_in": ["stop"]})
    checks = _by_name(run_checks(probe, _m(finish="length", endpoint="completion")))
    assert not checks["truncated"].passed
    assert not checks["expect.finish_reason_in"].passed


def test_chat_may_allow_length_explicitly() -> None:
    probe = _probe(max_tokens=7, expect={"finish_reason_in": ["stop", "length"]})
    assert _by_name(run_checks(probe, _m(finish="length")))["truncated"].passed


@pytest.mark.parametrize("token", ["<|user|>", "<|im_end|>", "[gMASK]", "<sop>", "<|endoftext|>", "</s>", "<|eot_id|>"])
def test_template_leak(token: str) -> None:
    c = check_template_leak(f"你好{token}很高兴")
    assert not c.passed and token in c.detail


@pytest.mark.parametrize(
    "text",
    [
        "\n你好！有什么可以帮你？\n用户：我想问个问题",
        "Hello! How can I help?\nUser: what is 2+2",
        "Sure.\nHuman: and then",
        "好的。\n  用户: 继续",
        "你好<|user|>\n再见",
    ],
)
def test_run_on_detects_the_next_turn(text: str) -> None:
    assert not check_run_on(text).passed


@pytest.mark.parametrize("text", ["\n你好！我是人工智能助手。", "Users: are people who use software.", "a\nb: c"])
def test_run_on_has_no_false_positive_on_plain_text(text: str) -> None:
    assert check_run_on(text).passed


def test_empty_and_whitespace_reply() -> None:
    assert not _by_name(run_checks(_probe(), _m(text="")))["empty_reply"].passed
    assert not _by_name(run_checks(_probe(), _m(text="\n  \n")))["empty_reply"].passed


def test_expect_assertions() -> None:
    expect = {
        "contains": "你好", "not_contains": ["再见"], "regex": "见到", "min_chars": 3, "max_chars": 5,
        "cjk_ratio_min": 0.5, "max_ttft_ms": 10, "max_latency_ms": 100, "json_valid": True,
    }  # fmt: skip
    checks = run_checks(_probe(expect=expect), _m())
    verdict = {c.name: c.passed for c in checks if c.name.startswith("expect.")}
    assert verdict == {
        "expect.contains": True, "expect.not_contains": True, "expect.regex": True, "expect.json_valid": False,
        "expect.min_chars": True, "expect.max_chars": False, "expect.cjk_ratio_min": True,
        "expect.max_ttft_ms": False, "expect.max_latency_ms": True,
    }  # fmt: skip


def test_cjk_ratio_fails_on_an_english_reply() -> None:
    checks = run_checks(_probe(expect={"cjk_ratio_min": 0.5}), _m(text="Hello, I am an assistant."))
    assert not _by_name(checks)["expect.cjk_ratio_min"].passed


def test_json_valid_passes_on_json() -> None:
    checks = run_checks(_probe(expect={"json_valid": True}), _m(text='{"a": 1}'))
    assert _by_name(checks)["expect.json_valid"].passed


def test_cjk_ratio() -> None:
    assert cjk_ratio("你好") == 1.0
    assert cjk_ratio("ab你好") == 0.5
    assert cjk_ratio("  ") == 0.0
