"""The one reader of files a user names: the config, --prompts, --trace and length histograms.

Real files in tmp_path, read through the commands' own entry points as well as directly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from monitor.config import load_settings
from monitor.config.strict_yaml import MAX_CONFIG_BYTES
from monitor.errors import ConfigError
from monitor.loadtest.prompts import load_prompts
from monitor.loadtest.traces import read_trace
from monitor.textfile import read_text_file


def test_a_byte_order_mark_is_dropped_everywhere(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_bytes(b"\xef\xbb\xbf" + json.dumps({"prompt": "Once upon a time"}).encode() + b"\n")
    assert [p.text for p in load_prompts(prompts)] == ["Once upon a time"]  # json.loads refused the BOM before
    trace = tmp_path / "trace.jsonl"
    trace.write_bytes(b"\xef\xbb\xbf" + b'{"timestamp": 0, "input_length": 8, "output_length": 4}\n')
    assert len(read_trace(trace).rows) == 1
    config = tmp_path / "monitor.yaml"
    config.write_bytes(b"\xef\xbb\xbftargets: [{name: t, base_url: 'http://127.0.0.1:9/v1'}]\n")
    assert load_settings(config, environ={}).targets[0].name == "t"


def test_the_limit_is_exact_and_named(tmp_path: Path) -> None:
    f = tmp_path / "f.txt"
    f.write_bytes(b"a" * 1024)
    assert read_text_file(f, "--x", 1024) == "a" * 1024
    with pytest.raises(ConfigError, match=r"^--x: \S+f.txt: larger than 1,023 bytes$"):
        read_text_file(f, "--x", 1023)
    config = tmp_path / "big.yaml"
    config.write_bytes(b"# " + b"x" * MAX_CONFIG_BYTES + b"\n")
    with pytest.raises(ConfigError, match=r"^config: \S+big.yaml: larger than 1 MiB$"):
        load_settings(config, environ={})


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b"ok \xff\xfe"), r"^--prompts: \S+: not UTF-8 \(invalid start byte at byte 3\)$"),
        (lambda p: p.mkdir(), r"^--prompts: cannot read \S+: Is a directory$"),
        (lambda p: None, r"^--prompts: cannot read \S+: No such file or directory$"),
    ],
    ids=["not-utf8", "directory", "missing"],
)
def test_unreadable_files_are_one_line_errors(tmp_path: Path, make: Callable[[Path], object], message: str) -> None:
    path = tmp_path / "prompts.jsonl"
    make(path)
    with pytest.raises(ConfigError, match=message):
        load_prompts(path)
