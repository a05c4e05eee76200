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
    # max_body_bytes: 8388608            # largest decoded reply (8 MiB); a longer one is body_too_large
    doctor:                              # the doctor's checks and the deployment fingerprint, on a schedule
      interval_s: 1h                     # or cron: "0 * * * *"; about 17 requests a run
      # checks: [stop_tokens, chat_template]   # default: all thirteen
      # fingerprint: {logprob_metric: tv, logprob_threshold: 0.2}
    metrics: {}                          # scrape the server's own /metrics (vLLM, SGLang, llama.cpp) every 15 s
    # price: {input_per_1m: 0.5, output_per_1m: 1.5, currency: USD}   # cost per probe and load run

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
      # golden: {answer: "你好！有什么可以帮你的吗？", min_similarity: 0.6}   # similarity, offline; see quality_rate

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

# ---- The daemon (llm-monitor run -c monitor.yaml) ----
api:
  host: 127.0.0.1                        # a non-loopback host needs token_env
  port: 9464                             # /healthz /readyz /metrics /api/v1/... and the dashboard
  # token_env: MONITOR_API_TOKEN         # bearer token for writes (silences)
  # read_token_env: MONITOR_READ_TOKEN   # reads need this or the write token; /healthz, /metrics stay open
  # allowed_hosts: [monitor.internal]    # Host names accepted on a loopback bind besides localhost (else 421)

retention:
  raw_days: 14                           # raw results; per-minute and per-hour rollups are kept longer
  minute_rollup_days: 30
  hour_rollup_days: 400

rules:
  - name: high-ttft                      # threshold: p95 TTFT over 5 minutes
    kind: threshold
    scope: {probe: chat-hello}           # or {target: glm4}, or all (the default): one alert per probe
    # metric: latency_ms ttft_ms itl_ms completion_tokens error_rate truncation_rate check_failure_rate
    metric: ttft_ms
    agg: p95                             # mean p50 p95 p99 max (rate for the *_rate metrics)
    window: 5m
    op: ">"
    value: 2000
    min_samples: 3
    for: 2m                              # pending this long before firing
    keep_firing_for: 5m                  # hysteresis after the condition clears
    severity: critical                   # info | warning | critical
    annotations:
      summary: "p95 TTFT {value} ms > {threshold} ms on {probe} ({target})"
  - name: ttft-creep                     # regression: the last hour against the 7 days before
    kind: regression
    metric: ttft_ms
    agg: p95
    window: 1h
    baseline_window: 7d
    ratio: 1.5
    min_samples: 10
    baseline_min_samples: 100
  - name: replies-run-on                 # the incident: replies that write the user's next turn
    kind: threshold
    metric: check_failure_rate
    check: run_on
    window: 15m
    op: ">="
    value: 0.2
  - name: probe-silent                   # absence: no ok result for 10 minutes
    kind: absence
    absent_for: 10m
  - name: probe-failing                  # three failed results in a row
    kind: consecutive_failures
    count: 3
  - name: doctor-worse                   # a doctor check's verdict got worse (pass -> warn/fail); names the fix
    kind: doctor
  - name: deployment-drift               # a fingerprint component changed (template, tokenizer, weights, ...)
    kind: drift
    # components: [chat_template, tokenizer, logprobs]
  - name: server-queue                   # the server's own queue (vllm:num_requests_waiting), from metrics:
    kind: threshold
    scope: {target: glm4}
    metric: server_requests_waiting
    agg: max
    window: 5m
    op: ">"
    value: 20

receivers:
  - name: ops-webhook
    format: generic                      # generic alertmanager slack feishu dingtalk wecom
    url: http://127.0.0.1:9099/hook
    # secret_env: OPS_WEBHOOK_SECRET     # HMAC-SHA256 signature headers (and Feishu/DingTalk signing)
    send_resolved: true

maintenance:
  - name: nightly-deploys
    cron: "0 2 * * *"                    # 5-field crontab; notifications are held during the window
    duration: 30m
    scope: {target: glm4}
"""
