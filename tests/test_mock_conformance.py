"""The mock against recorded real vLLM responses (tests/fixtures/vllm-<version>/, see its README.md).

Each fixture holds one request and vLLM's answer. The same request goes to the mock (its own model
name in place of the served one) through the recorder's own client, and the two answers must have
the same *shape*: status, content type, the error envelope, key sets, key order and value types of
every JSON object, and for streams the order and kinds of the SSE events. Values (text, counts,
ids) differ by design: vLLM served a tiny Qwen2 model, the mock plays GLM-4-9B-Chat.

Judgement calls, kept small and named here:
* `NULLABLE`: keys whose value is null or not depending on the model, not the wire.
* `EXACT`: keys whose *values* are part of the shape (`object`, envelope `type`/`code`/`param`...).
* Streams are compared per choice, with runs of content chunks collapsed (their count is the text's
  length); cross-choice interleaving with n > 1 is engine timing, not wire format.
* `/metrics`: the mock renders a subset; every family it renders must exist in vLLM with the same
  type, label names and sample names.
* Context cases: the mock's max_model_len is set so that the prompt fills the mock's context as it
  filled vLLM's (the tokenizers differ, so the same text is a different number of tokens).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from monitor.mock.app import VLLM_VERSION
from tests.mockserver import MockProcess
from tests.realservers.record_vllm import scrub_response, send

FIXTURES = Path(__file__).parent / "fixtures" / f"vllm-{VLLM_VERSION}"
CASES = sorted(FIXTURES.glob("*.json"))

NULLABLE = {
    # int (a stop token id), str (a stop string) or null (the tokenizer's EOS): GLM-4 ends a turn
    # on <|user|>, a stop id from generation_config.json; the tiny Qwen2 ends on its EOS.
    "stop_reason",
}
EXACT = {"object", "role", "type", "code", "param", "detail"}


def kind(value: object) -> str:
    if value is None:
        return "null"
    for name, types in (("bool", bool), ("int", int), ("float", float), ("str", str), ("list", list), ("dict", dict)):
        if isinstance(value, types):
            return name
    return type(value).__name__


def shape_diff(real: Any, mock: Any, path: str = "$", key: str | None = None) -> list[str]:
    """Where `mock` differs from `real` in shape; empty when they agree."""
    real_kind, mock_kind = kind(real), kind(mock)
    if real_kind != mock_kind:
        if key in NULLABLE and "null" in (real_kind, mock_kind):
            return []
        return [f"{path}: vLLM has {real_kind} {_short(real)}, the mock {mock_kind} {_short(mock)}"]
    if key in EXACT and real_kind != "dict" and real != mock:
        return [f"{path}: vLLM says {real!r}, the mock {mock!r}"]
    if isinstance(real, dict):
        return _dict_diff(real, mock, path)
    problems: list[str] = []
    if isinstance(real, list):
        if bool(real) != bool(mock):
            problems.append(f"{path}: vLLM has {len(real)} items, the mock {len(mock)}")
        elif real:
            for index, item in enumerate(mock):
                problems += shape_diff(real[min(index, len(real) - 1)], item, f"{path}[{index}]", key)
    return problems


def _dict_diff(real: dict[str, Any], mock: dict[str, Any], path: str) -> list[str]:
    problems = []
    missing = [k for k in real if k not in mock]
    extra = [k for k in mock if k not in real]
    if missing:
        problems.append(f"{path}: keys missing in the mock: {missing}")
    if extra:
        problems.append(f"{path}: keys only the mock has: {extra}")
    if not missing and not extra and list(real) != list(mock):
        problems.append(f"{path}: key order vLLM {list(real)}, the mock {list(mock)}")
    for k in real:
        if k in mock:
            problems += shape_diff(real[k], mock[k], f"{path}.{k}", k)
    return problems


def _short(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


# --- streams -------------------------------------------------------------------------------------


def event_kind(event: Any) -> str:
    """role / content / finish / usage / error / done, the vocabulary of the wire reference §1.4."""
    if event == "[DONE]":
        return "done"
    if not isinstance(event, dict) or "choices" not in event:
        return "error" if isinstance(event, dict) and "error" in event else "other"
    if not event["choices"]:
        return "usage" if "usage" in event else "empty"
    choice = event["choices"][0]
    if choice.get("finish_reason") is not None:
        return "finish"
    return "role" if "role" in choice.get("delta", {}) else "content"


def _choice_index(event: Any) -> int | None:
    if isinstance(event, dict) and event.get("choices"):
        index = event["choices"][0].get("index")
        return index if isinstance(index, int) else None
    return None


def stream_outline(events: list[Any]) -> dict[str, list[str]]:
    """Per choice, the kinds of its events with content runs collapsed; "stream": what follows them."""
    outline: dict[str, list[str]] = {}
    for event in events:
        index = _choice_index(event)
        lane = outline.setdefault("stream" if index is None else f"choice {index}", [])
        name = event_kind(event)
        if not (name == "content" and lane and lane[-1] == "content"):
            lane.append(name)
    return outline


def stream_diff(real: list[Any], mock: list[Any]) -> list[str]:
    real_outline, mock_outline = stream_outline(real), stream_outline(mock)
    if real_outline != mock_outline:
        return [f"event kinds: vLLM {real_outline}, the mock {mock_outline}"]
    by_kind: dict[str, list[Any]] = {}
    for event in real:
        by_kind.setdefault(event_kind(event), []).append(event)
    seen: dict[str, int] = {}
    problems: list[str] = []
    for position, event in enumerate(mock):
        name = event_kind(event)
        ordinal = seen.get(name, 0)
        seen[name] = ordinal + 1
        references = by_kind[name]
        problems += shape_diff(references[min(ordinal, len(references) - 1)], event, f"event {position} ({name})")
    return problems


# --- everything else -----------------------------------------------------------------------------


def metrics_diff(real: dict[str, Any], mock: dict[str, Any]) -> list[str]:
    problems = []
    for name, family in mock.items():
        if not name.startswith("vllm:"):
            continue
        if name not in real:
            problems.append(f"metric {name}: vLLM has no such family")
            continue
        for field in ("type", "labels"):
            if family[field] != real[name][field]:
                problems.append(f"metric {name}: {field} vLLM {real[name][field]}, the mock {family[field]}")
        unknown = sorted(set(family["samples"]) - set(real[name]["samples"]))
        if unknown:
            problems.append(f"metric {name}: samples vLLM does not write: {unknown}")
    return problems


def response_diff(real: dict[str, Any], mock: dict[str, Any]) -> list[str]:
    problems = []
    for field in ("status", "content_type", "kind"):
        if real[field] != mock[field]:
            problems.append(f"{field}: vLLM {real[field]!r}, the mock {mock[field]!r}")
    if problems:
        return [*problems, f"the mock's body: {_short(mock.get('body', mock.get('events')))}"]
    if real["kind"] == "json":
        problems += shape_diff(real["body"], mock["body"])
    elif real["kind"] == "sse":
        if real["framing"] != mock["framing"]:
            problems.append(f"SSE framing: vLLM {real['framing']}, the mock {mock['framing']}")
        problems += stream_diff(real["events"], mock["events"])
    elif real["kind"] == "metrics":
        problems += metrics_diff(real["families"], mock["families"])
    elif real["kind"] == "text" and real["body"] != mock["body"]:
        problems.append(f"text body: vLLM {_short(real['body'])}, the mock {_short(mock['body'])}")
    return problems


def _mock_prompt_tokens(mock: MockProcess, model: str, body: dict[str, Any]) -> int:
    tokenize = {key: body[key] for key in ("messages", "prompt") if key in body}
    reply = send(mock.root_url, {**_post("/tokenize"), "json": {**tokenize, "model": model}}, model)
    assert reply["status"] == 200, reply
    count: int = reply["body"]["count"]
    return count


def _post(path: str) -> dict[str, Any]:
    return {"method": "POST", "path": path, "headers": {"Content-Type": "application/json"}}


def test_fixtures_exist_and_name_their_server() -> None:
    assert len(CASES) >= 40, f"no recorded vLLM {VLLM_VERSION} fixtures in {FIXTURES}"
    for path in CASES:
        fixture = json.loads(path.read_text(encoding="utf-8"))
        assert fixture["server"].startswith(f"vLLM {VLLM_VERSION}"), path.name
        assert fixture["case"] == path.stem


@pytest.mark.parametrize("path", CASES, ids=[path.stem for path in CASES])
def test_mock_answers_like_vllm(mock: MockProcess, path: Path) -> None:
    fixture = json.loads(path.read_text(encoding="utf-8"))
    model = mock.configure()["model"]
    max_model_len = fixture["max_model_len"]
    if "prompt_tokens" in fixture:
        # Keep the prompt's headroom (negative: overflow) the same in tokens of each tokenizer.
        headroom = fixture["max_model_len"] - fixture["prompt_tokens"]
        max_model_len = max(16, _mock_prompt_tokens(mock, model, fixture["request"]["json"]) + headroom)
    mock.configure(max_model_len=max_model_len)
    got = scrub_response(send(mock.root_url, fixture["request"], model))
    problems = response_diff(fixture["response"], got)
    assert not problems, f"{path.name} ({fixture['about']}):\n  " + "\n  ".join(problems)


def test_shape_diff_catches_what_it_should() -> None:
    """The comparison itself: missing keys, order, types, nullable keys, exact values, streams."""
    assert shape_diff({"a": 1, "b": None}, {"a": 2, "b": None}) == []
    assert shape_diff({"a": 1}, {"a": 1.0}) == ["$.a: vLLM has int 1, the mock float 1.0"]
    assert "keys missing" in shape_diff({"a": 1, "b": 2}, {"a": 1})[0]
    assert "key order" in shape_diff({"a": 1, "b": 2}, {"b": 2, "a": 1})[0]
    assert shape_diff({"stop_reason": None}, {"stop_reason": 151336}) == []
    assert shape_diff({"object": "chat.completion"}, {"object": "text_completion"})
    assert shape_diff([{"x": 1}], [{"x": 1}, {"x": 2}]) == []
    assert shape_diff({"choices": []}, {"choices": [{"index": 0}]})
    role = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    text = {"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}]}
    stop = {"choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "stop"}]}
    usage = {"choices": [], "usage": {"prompt_tokens": 1}}
    assert stream_outline([role, text, text, stop, usage, "[DONE]"]) == {
        "choice 0": ["role", "content", "finish"],
        "stream": ["usage", "done"],
    }
    assert stream_diff([role, text, stop, "[DONE]"], [role, stop, "[DONE]"])
    assert re.search("event kinds", stream_diff([role, stop, "[DONE]"], [role, stop, usage, "[DONE]"])[0])
