"""Sans-IO "engine": applies vLLM's stop rules to the model's token stream.

The result is a finished `Generation`: one text delta per output token (what each streamed
chunk carries), the finish reason and the stop reason. Streaming and non-streaming responses
are both rendered from it, so their texts always match.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from monitor.mock import glm

__all__ = ["Generation", "SamplingRules", "generate"]

# GLM-4's generation_config.json lists these as extra EOS ids; vLLM >= 0.8 adds them to
# stop_token_ids unless ignore_eos is set (§5), which is why replies end with stop_reason 151336.
GENERATION_CONFIG_STOP_IDS = (glm.USER, glm.OBSERVATION)


@dataclass(frozen=True, slots=True)
class SamplingRules:
    """The stop-related sampling parameters of one request, already validated."""

    max_tokens: int
    stop: Sequence[str] = ()
    stop_token_ids: Sequence[int] = ()
    ignore_eos: bool = False
    min_tokens: int = 0
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    generation_config_stop_ids: bool = True


@dataclass(slots=True)
class Generation:
    token_ids: list[int] = field(default_factory=list)
    deltas: list[str] = field(default_factory=list)
    finish_reason: str = "length"
    stop_reason: int | str | None = None

    @property
    def text(self) -> str:
        return "".join(self.deltas)


def _find_stop(text: str, start: int, stops: Sequence[str]) -> tuple[int, str] | None:
    found: tuple[int, str] | None = None
    for stop in stops:
        index = text.find(stop, max(0, start - len(stop) + 1))
        if index >= 0 and (found is None or index < found[0]):
            found = (index, stop)
    return found


def generate(model_tokens: Iterable[int], rules: SamplingRules) -> Generation:
    """Run the model until a stop condition (vLLM's `check_stop` plus stop strings, §1.3)."""
    stop_ids = set(rules.stop_token_ids)
    if rules.generation_config_stop_ids and not rules.ignore_eos:
        stop_ids.update(GENERATION_CONFIG_STOP_IDS)
    decoder = glm.IncrementalDecoder(skip_special_tokens=rules.skip_special_tokens)
    # Streaming holds back len(longest stop)-1 chars so a partial stop string is never sent (§5).
    holdback = max((len(s) for s in rules.stop), default=1) - 1
    out = Generation()
    text = ""
    sent = 0
    tokens: Iterator[int] = iter(model_tokens)
    for token_id in tokens:
        count = len(out.token_ids)
        is_eos = token_id == glm.EOS and not rules.ignore_eos
        if (is_eos or token_id in stop_ids) and count < rules.min_tokens:
            continue  # min_tokens masks the stop tokens, so the model samples something else
        out.token_ids.append(token_id)
        if is_eos or token_id in stop_ids:
            # The stop token's own text is never shown; the held-back text is flushed.
            out.deltas.append(text[sent:])
            out.finish_reason, out.stop_reason = "stop", (None if is_eos else token_id)
            return out
        piece = decoder.feed(token_id)
        previous_len = len(text)
        text += piece
        if rules.stop and piece and count + 1 > rules.min_tokens:
            match = _find_stop(text, previous_len, rules.stop)
            if match is not None:
                index, stop = match
                end = index + len(stop) if rules.include_stop_str_in_output else index
                out.deltas.append(text[sent:end] if end > sent else "")
                out.finish_reason, out.stop_reason = "stop", stop
                return out
        if count + 1 >= rules.max_tokens:
            out.deltas.append(text[sent:])
            return out
        safe = len(text) - holdback
        if safe > sent:
            out.deltas.append(text[sent:safe])
            sent = safe
        else:
            out.deltas.append("")
    return out  # the toy model never ends on its own; kept for finite test inputs
