from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.config import DEFAULT_DB_URL, load_settings, parse_settings, resolve_keys, to_seconds
from monitor.errors import ConfigError
from monitor.example import EXAMPLE_CONFIG

ISSUE_CONFIG = """
storage:
  url: sqlite+aiosqlite:///llm-monitor.db
targets:
  - name: glm4
    base_url: http://127.0.0.1:8000/v1
    model: glm-4-9b-chat
    api_key_env: VLLM_API_KEY
    timeout_s: 60
probes:
  - name: chat-hello
    target: glm4
    endpoint: chat
    messages: [{role: user, content: "你好"}]
    max_tokens: 512
    temperature: 0.7
    stream: true
    interval_s: 60
    expect: {finish_reason_in: [stop], not_contains: ["<|user|>"]}
  - name: completion-hello
    target: glm4
    endpoint: completion
    prompt: "你好"
    max_tokens: 7
    stream: false
"""


def _base(**probe: Any) -> dict[str, Any]:
    p = {"name": "p", "target": "t", "messages": [{"role": "user", "content": "hi"}], **probe}
    return {"targets": [{"name": "t", "base_url": "http://127.0.0.1:1/v1"}], "probes": [p]}


def test_issue_config_shape_loads(tmp_path: Path) -> None:
    path = tmp_path / "monitor.yaml"
    path.write_text(ISSUE_CONFIG, encoding="utf-8")
    s = load_settings(path, environ={"VLLM_API_KEY": "sk-secret"})
    assert [p.name for p in s.probes] == ["chat-hello", "completion-hello"]
    assert s.probes[0].expect.finish_reason_in == ["stop"]
    assert s.probes[1].endpoint == "completion" and s.probes[1].max_tokens == 7
    assert s.api_key("glm4") == "sk-secret"
    # The key never shows in a dump or repr of the settings.
    assert "sk-secret" not in repr(s) and "sk-secret" not in s.model_dump_json()


def test_example_config_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "monitor.yaml"
    path.write_text(EXAMPLE_CONFIG, encoding="utf-8")
    s = load_settings(path, environ={})
    assert len(s.probes) >= 2


@pytest.mark.parametrize(
    ("probe", "message"),
    [
        ({"max_tokens": 0}, "probes[0].max_tokens: must be >= 1"),
        ({"temperature": -1}, "probes[0].temperature: must be >= 0"),
        ({"endpoint": "chatt"}, "probes[0].endpoint: must be one of 'chat' or 'completion'"),
        ({"max_token": 5}, "probes[0].max_token: unknown field"),
        ({"stream": "maybe"}, "probes[0].stream: must be true or false"),
        ({"expect": {"regex": "("}}, "probes[0].expect.regex: not a valid regular expression"),
        ({"expect": {"nope": 1}}, "probes[0].expect.nope: unknown field"),
        ({"target": "other"}, "probes[0].target: unknown target 'other' (targets: t)"),
        ({"stream": False, "expect": {"max_ttft_ms": 10}}, "probes[0]: expect.max_ttft_ms needs stream: true"),
        ({"messages": None}, "probes[0]: a chat probe needs messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "probes[0].messages[0].role: must be one of"),
    ],
)
def test_probe_errors_name_the_yaml_path(probe: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(_base(**probe))
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_sampling_params_pass_through_and_extra_body() -> None:
    s = parse_settings(_base(stop_token_ids=[151336], top_k=5, ignore_eos=False, extra_body={"x_custom": 1}))
    assert s.probes[0].sampling == {"stop_token_ids": [151336], "top_k": 5, "ignore_eos": False}
    assert s.probes[0].extra_body == {"x_custom": 1}


def test_target_and_top_level_errors() -> None:
    with pytest.raises(ConfigError, match=r"^targets\[0\]\.base_url: must be an http"):
        parse_settings({"targets": [{"name": "t", "base_url": "127.0.0.1:8000"}]})
    with pytest.raises(ConfigError, match=r"^targets\[1\]\.name: duplicate name 't'"):
        parse_settings({"targets": [{"name": "t", "base_url": "http://a/v1"}, {"name": "t", "base_url": "http://b"}]})
    with pytest.raises(ConfigError, match=r"^targets: must be a list"):
        parse_settings({"targets": {"t": 1}})
    with pytest.raises(ConfigError, match=r"^targets\[0\]\.headers: do not put credentials"):
        parse_settings({"targets": [{"name": "t", "base_url": "http://a", "headers": {"Authorization": "x"}}]})


def test_yaml_and_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("targets: [\n  - name: x\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid YAML at line \d+, column \d+"):
        load_settings(bad, environ={})
    with pytest.raises(ConfigError, match=r"config: cannot read \S*missing.yaml: "):
        load_settings(tmp_path / "missing.yaml", environ={})
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings(listing, environ={})


def test_missing_api_key_env_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "monitor.yaml"
    path.write_text(ISSUE_CONFIG, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^targets\[0\]\.api_key_env: environment variable VLLM_API_KEY is not set"):
        load_settings(path, environ={})


def test_db_url_precedence(tmp_path: Path) -> None:
    path = tmp_path / "monitor.yaml"
    raw = yaml.safe_load(ISSUE_CONFIG)
    raw["targets"][0].pop("api_key_env")
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert load_settings(path, environ={}).storage.url == "sqlite+aiosqlite:///llm-monitor.db"
    env = {"MONITOR_DB_URL": "sqlite+aiosqlite:///env.db"}
    assert load_settings(path, environ=env).storage.url == "sqlite+aiosqlite:///env.db"
    assert load_settings(path, environ=env, db_url="sqlite+aiosqlite:///flag.db").storage.url.endswith("flag.db")


def test_base_url_gives_the_default_probe_set() -> None:
    s = load_settings(base_url="http://127.0.0.1:8000/v1/", model="glm-4-9b-chat", environ={})
    assert s.storage.url == DEFAULT_DB_URL
    assert s.targets[0].base_url == "http://127.0.0.1:8000/v1"
    shapes = {(p.endpoint, p.stream) for p in s.probes}
    assert shapes == {("chat", True), ("chat", False), ("completion", True), ("completion", False)}
    for p in s.probes:
        assert (p.messages[0].content if p.messages else p.prompt) == "你好"


def test_to_seconds() -> None:
    assert to_seconds("90") == 90 and to_seconds("2m") == 120 and to_seconds("1.5h") == 5400
    assert to_seconds("250ms") == 0.25 and to_seconds(3) == 3
    with pytest.raises(ConfigError, match="not a duration"):
        to_seconds("soon")


def test_receiver_secret_is_read_from_the_environment() -> None:
    raw = {
        "receivers": [{"name": "ops", "format": "generic", "url": "http://127.0.0.1:1/hook", "secret_env": "HOOK_KEY"}]
    }
    settings = resolve_keys(parse_settings(raw), {"HOOK_KEY": "s3cret"})
    assert settings.receiver_secrets["ops"].get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings) and "s3cret" not in settings.model_dump_json()
    with pytest.raises(ConfigError, match=r"^receivers\[0\]\.secret_env: environment variable HOOK_KEY is not set"):
        resolve_keys(parse_settings(raw), {})
