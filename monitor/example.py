"""The commented example config printed by `llm-monitor init` (kept valid by a test)."""

from __future__ import annotations

EXAMPLE_CONFIG = """\
# llm-monitor config. Validate with: llm-monitor check-config -c monitor.yaml
# Durations and sizes carry their unit in the name (timeout_s, max_latency_ms).

storage:
  # SQLite (the default) or PostgreSQL; MONITOR_DB_URL or --db override this.
  url: sqlite+aiosqlite:///llm-monitor.db
  # url: postgresql+asyncpg://monitor@127.0.0.1:5432/monitor

targets:
  - name: glm4
    base_url: http://127.0.0.1:8000/v1   # the OpenAI-compatible root, including /v1
    model: glm-4-9b-chat                 # omit to let the server pick its base model
    # api_key_env: VLLM_API_KEY          # the key is read from this variable, never stored or logged
    timeout_s: 60                        # whole request
    connect_timeout_s: 10
    chunk_timeout_s: 30                  # longest silence allowed between two stream chunks

probes:
  # A chat canary: the reply must end on its own (finish_reason stop) and never write the next turn.
  - name: chat-hello
    target: glm4
    endpoint: chat                       # chat | completion
    messages: [{role: user, content: "你好"}]
    max_tokens: 512
    temperature: 0.7
    stream: true                         # streaming measures TTFT and inter-token latency
    interval_s: 60                       # how often the daemon runs it
    expect:
      finish_reason_in: [stop]
      not_contains: ["<|user|>"]
      cjk_ratio_min: 0.3
      max_ttft_ms: 2000

  # The incident: /v1/completions applies no chat template, and max_tokens 7 cuts every answer.
  # Truncation is recorded on completion probes; it fails only if expect asks for [stop].
  - name: completion-hello
    target: glm4
    endpoint: completion
    prompt: "你好"
    max_tokens: 7
    stream: false

  # Any sampling parameter passes through to the request (stop, stop_token_ids, top_k, ignore_eos, ...).
  # GLM-4 needs its turn tokens as stop ids when the server lacks generation_config.json:
  # - name: chat-glm-stop-ids
  #   target: glm4
  #   messages: [{role: user, content: "用一句话介绍你自己"}]
  #   stop_token_ids: [151329, 151336, 151338]
  #   extra_body: {chat_template_kwargs: {}}   # fields llm-monitor does not know go here
"""
