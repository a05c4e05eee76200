"""The manual: README.md is the front door, docs/ is the MkDocs site. It builds with --strict, the
commands it shows parse with the real CLI, and everything it cites lives in the repository."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from monitor.cli import build_cli

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200

# The README's two setup commands; scripts/check and .ci/run promise to run the second one.
SETUP_COMMANDS = [
    "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/llm-monitor demo",
    "bash scripts/check",
]

# Files that doc commands read (`-c FILE`, `--prompts FILE`) but that the repository does not hold,
# because an earlier command in the docs writes them. Each must be written by a doc command (`> FILE`).
WRITTEN_BY_THE_DOCS = {
    "monitor.yaml": "the reader's config, written by `llm-monitor init > monitor.yaml`",
}
INPUT_PATH_PARAMS = {"config", "prompts"}
# Pages whose ```yaml blocks together make one config (`llm-monitor check-config` must accept it).
CONFIG_PAGES = ["configuration.md", "alerts.md"]

# Bare file names (no directory) the docs quote that are not repository files.
NOT_REPOSITORY_FILES = {
    "monitor.yaml": "the reader's config (see WRITTEN_BY_THE_DOCS)",
}
# vllm-wire.md quotes vLLM's own source files by their bare names (`protocol.py`, `serving_chat.py`).
BARE_NAMES_ARE_FOREIGN = {"vllm-wire.md"}

# Pages not written for this site: lists and paragraphs that render differently on GitHub and MkDocs.
RENDERING_EXEMPT = {
    "incident.md": "the original article, pasted as it was published",
    "vllm-wire.md": "a reference kept as written",
}

# Top-level entries that are build output or local state, not repository content.
_NOT_CONTENT = {".git", ".venv", "build", "site", "dist", "htmlcov", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
TOP_LEVEL = {p.name for p in ROOT.iterdir() if p.name not in _NOT_CONTENT and not p.name.endswith(".egg-info")}

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
_SHELL = {"bash", "sh", "shell", "console"}
_SEPARATORS = {";", "&&", "||", "|", "&", "(", ")"}
_REDIRECTS = {">", ">>", "<"}
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_BARE_FILE = re.compile(r"[\w.-]+\.(?:py|sh|md|toml|yaml|yml|cfg|ini)|Dockerfile")
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_LIST_ITEM = re.compile(r"^(?P<indent> *)(?:[-*+]|\d+\.) ")


@dataclass(frozen=True)
class Block:
    document: Path
    line: int  # of the opening fence, 1-based
    lang: str
    indent: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Command:
    """One simple command from a shell block: its words, and where the docs show it."""

    where: str
    words: tuple[str, ...]
    writes: tuple[str, ...]


def _name(document: Path) -> str:
    return str(document.relative_to(ROOT))


def fenced_blocks(document: Path) -> list[Block]:
    blocks: list[Block] = []
    opened: tuple[int, str, str, str] | None = None
    body: list[str] = []
    for number, line in enumerate(document.read_text(encoding="utf-8").splitlines(), 1):
        match = _FENCE.match(line)
        if opened is None:
            if match:
                opened, body = (number, match["fence"], match["lang"], match["indent"]), []
        elif match and match["fence"].startswith(opened[1]) and not match["lang"]:
            blocks.append(Block(document, opened[0], opened[2], opened[3], tuple(body)))
            opened = None
        else:
            body.append(line)
    assert opened is None, f"{_name(document)}:{opened[0]}: a code block is never closed"
    return blocks


def shell_lines(block: Block) -> list[tuple[int, str]]:
    """The command lines of a shell block, continuations joined; in `console` blocks only `$ ` lines."""
    commands: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for offset, raw in enumerate(block.lines, 1):
        line = raw.strip()
        if pending is not None:
            start, text = pending
            pending = None
        elif block.lang == "console":
            if not line.startswith("$ "):
                continue
            start, text, line = block.line + offset, "", line[2:]
        else:
            start, text = block.line + offset, ""
        text += line
        if text.endswith("\\"):
            pending = (start, text[:-1] + " ")
        elif text and not text.startswith("#"):
            commands.append((start, text))
    assert pending is None, f"{_name(block.document)}:{block.line}: a line ends in `\\` at the end of its block"
    return commands


def split_commands(where: str, line: str) -> list[Command]:
    """`A=1 llm-monitor x > f && cmd | cmd; cmd` -> simple commands, without assignments and redirects."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[Command] = []
    words: list[str] = []
    writes: list[str] = []
    tokens = list(lexer)
    i = 0
    while i <= len(tokens):
        token = tokens[i] if i < len(tokens) else ";"
        if token in _SEPARATORS:
            if words:
                commands.append(Command(where, tuple(words), tuple(writes)))
            words, writes = [], []
        elif token in _REDIRECTS:
            i += 1
            if token != "<":
                writes.append(tokens[i])
        elif words or not _ASSIGNMENT.match(token):
            words.append(token)
        i += 1
    return commands


def doc_commands() -> list[Command]:
    commands: list[Command] = []
    for document in DOCUMENTS:
        for block in fenced_blocks(document):
            if block.lang in _SHELL:
                for number, line in shell_lines(block):
                    commands.extend(split_commands(f"{_name(document)}:{number}", line))
    return commands


COMMANDS = doc_commands()
LLM_MONITOR = [c for c in COMMANDS if Path(c.words[0]).name == "llm-monitor"]
WRITTEN = {path for c in COMMANDS for path in c.writes}


def parse_with_the_real_cli(args: list[str]) -> click.Context:
    """Parse `llm-monitor ARGS` with click, command by command, without invoking anything."""
    command: click.Command = build_cli()
    ctx: click.Context | None = None
    name = "llm-monitor"
    rest = list(args)
    while True:
        if not isinstance(command, click.Group):
            return command.make_context(name, rest, parent=ctx)
        probe_ctx = click.Context(command, info_name=name, parent=ctx)
        names = set(command.list_commands(probe_ctx))
        at = next((i for i, word in enumerate(rest) if word in names), None)
        assert at is not None, f"{name}: no known subcommand in {rest} (known: {sorted(names)})"
        # The group parses its own options; the subcommand and its arguments are left over.
        ctx = command.make_context(name, rest, parent=ctx)
        name, rest = rest[at], rest[at + 1 :]
        sub = command.get_command(ctx, name)
        assert sub is not None
        command = sub


def _cited_path(text: str) -> str | None:
    """A repository path quoted in the docs (`tests/test_x.py`, `deploy/`), or None for anything else."""
    text = text.rstrip("/").split("#", 1)[0]
    if not text or any(c in text for c in "<>*{}…$~") or text.startswith(("/", ".../", "-")):
        return None
    if "/" in text:
        return text if text.split("/", 1)[0] in TOP_LEVEL else None
    return text if _BARE_FILE.fullmatch(text) else None


def _outside_code(document: Path) -> list[tuple[int, str]]:
    """The document's lines that are not inside a fenced code block."""
    inside: set[int] = set()
    for block in fenced_blocks(document):
        inside.update(range(block.line, block.line + len(block.lines) + 2))
    lines = document.read_text(encoding="utf-8").splitlines()
    return [(n, line) for n, line in enumerate(lines, 1) if n not in inside]


# --- the front door ---------------------------------------------------------------------------------


def test_readme_is_a_front_door() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


@pytest.mark.parametrize("document", [README, ROOT / "docs" / "index.md"], ids=_name)
def test_the_setup_commands_are_the_readme_s_two(document: Path) -> None:
    setup = next(b for b in fenced_blocks(document) if "bash scripts/check" in b.lines)
    assert [line for line in setup.lines if line and not line.startswith("#")] == SETUP_COMMANDS


# --- the site ---------------------------------------------------------------------------------------


@pytest.fixture(name="site", scope="module")
def fix_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once by the real MkDocs with --strict (a warning is an error)."""
    site = tmp_path_factory.mktemp("site")
    mkdocs = Path(sys.executable).with_name("mkdocs")
    command = [str(mkdocs)] if mkdocs.exists() else [sys.executable, "-m", "mkdocs"]
    out = subprocess.run(
        [*command, "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=50, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "WARNING" not in out.stderr, out.stderr
    return site


def test_mkdocs_build_strict_succeeds(site: Path) -> None:
    pages = {p.parent.name for p in site.glob("*/index.html")}
    assert {d.stem for d in DOCUMENTS[1:] if d.stem != "index"} <= pages
    assert (site / "index.html").is_file() and (site / "dashboard.png").is_file()


def test_readme_links_into_the_site_resolve_with_their_anchors(site: Path) -> None:
    # MkDocs checks the links between pages; the README is not a page, so its anchors are checked here.
    broken: list[str] = []
    for target in _LINK.findall(README.read_text(encoding="utf-8")):
        path, _, anchor = target.partition("#")
        if not path.startswith("docs/") or not anchor:
            continue
        page = Path(path).relative_to("docs").with_suffix("")
        html = (site / ("" if page.name == "index" else page.as_posix()) / "index.html").read_text(encoding="utf-8")
        if f'id="{anchor}"' not in html:
            broken.append(target)
    assert not broken, broken


# --- commands ---------------------------------------------------------------------------------------


def test_the_docs_show_commands() -> None:
    assert len(LLM_MONITOR) >= 20, [c.where for c in LLM_MONITOR]
    assert "bash scripts/check" in {" ".join(c.words) for c in COMMANDS}


@pytest.mark.parametrize("command", LLM_MONITOR, ids=lambda c: f"{c.where} {' '.join(c.words[1:3])}")
def test_every_llm_monitor_command_in_the_docs_parses(command: Command) -> None:
    try:
        ctx = parse_with_the_real_cli(list(command.words[1:]))
    except click.UsageError as exc:
        pytest.fail(f"{command.where}: `{shlex.join(command.words)}`: {exc.format_message()}")
    missing = [
        str(value)
        for name, value in ctx.params.items()
        if name in INPUT_PATH_PARAMS and value is not None
        and not (ROOT / value).exists() and str(value) not in WRITTEN_BY_THE_DOCS
    ]  # fmt: skip
    assert not missing, f"{command.where}: reads {missing}, which is not in the repository"


def test_the_config_the_docs_show_passes_check_config(tmp_path: Path) -> None:
    # The YAML blocks of these pages are fragments of one config; together they must be a valid one.
    fragments = [
        "\n".join(block.lines)
        for page in CONFIG_PAGES
        for block in fenced_blocks(ROOT / "docs" / page)
        if block.lang == "yaml"
    ]
    config = tmp_path / "monitor.yaml"
    config.write_text("\n".join(fragments), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    env |= {"PYTHONPATH": str(ROOT), "VLLM_API_KEY": "k", "OPS_WEBHOOK_SECRET": "s"}  # the secrets they name
    out = subprocess.run(
        [sys.executable, "-m", "monitor", "check-config", "-c", str(config)], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=50, check=False,
    )  # fmt: skip
    assert out.returncode == 0, (out.stdout, out.stderr)


@pytest.mark.parametrize("path", sorted(WRITTEN_BY_THE_DOCS))
def test_files_the_docs_read_before_the_repo_has_them_are_written_by_a_doc_command(path: str) -> None:
    assert path in WRITTEN, f"no doc command writes {path} (`... > {path}`); {WRITTEN_BY_THE_DOCS[path]}"


def test_the_command_parser_rejects_what_the_cli_rejects() -> None:
    parse_with_the_real_cli(["probe", "--base-url", "http://127.0.0.1:8000/v1", "--json"])
    for bad in (["probe", "--no-such-option"], ["loadtest", "--endpoint", "sideways"], ["silence", "expire", "ID"]):
        with pytest.raises(click.UsageError):
            parse_with_the_real_cli(bad)
    assert split_commands("x", "A=1 B=2 llm-monitor init > m.yaml && llm-monitor run -c m.yaml | cat") == [
        Command("x", ("llm-monitor", "init"), ("m.yaml",)),
        Command("x", ("llm-monitor", "run", "-c", "m.yaml"), ()),
        Command("x", ("cat",), ()),
    ]


# --- citations --------------------------------------------------------------------------------------


def test_everything_the_docs_cite_lives_in_the_repository() -> None:
    missing: list[str] = []
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        cited = {m for m in re.findall(r"`([^`\s]+)`", text)}
        cited |= {word for c in COMMANDS if c.where.startswith(f"{_name(document)}:") for word in c.words}
        for quoted in sorted(cited):
            path = _cited_path(quoted)
            if path is None or ("/" not in path and document.name in BARE_NAMES_ARE_FOREIGN):
                continue
            if not (ROOT / path).exists() and path not in NOT_REPOSITORY_FILES:
                missing.append(f"{_name(document)}: `{quoted}`")
        for target in _LINK.findall(text):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL, or an anchor on the same page
            path = (document.parent / target.split("#", 1)[0]).resolve()
            if not path.is_relative_to(ROOT) or not path.exists():
                missing.append(f"{_name(document)}: ({target})")
    assert not missing, missing


@pytest.mark.parametrize("document", [d for d in DOCUMENTS if d.name not in RENDERING_EXEMPT], ids=_name)
def test_the_markdown_renders_the_same_on_github_and_in_mkdocs(document: Path) -> None:
    # Python-Markdown (MkDocs) needs a blank line before a list, four spaces per nesting level and
    # fences at the margin; GitHub splits table cells at a `|` even inside a code span.
    problems: list[str] = []
    previous = ""
    in_list = False
    for number, line in _outside_code(document):
        item = _LIST_ITEM.match(line)
        if item:
            if previous.strip() and not in_list:
                problems.append(f"{number}: a list needs a blank line before it")
            if len(item["indent"]) % 4:
                problems.append(f"{number}: a nested list is indented by four spaces per level")
            in_list = True
        elif line.strip() and not previous.strip() and not line.startswith(" "):
            in_list = False
        if line.startswith("|") and any("|" in span for span in re.findall(r"`([^`]*)`", line)):
            problems.append(f"{number}: a `|` inside a code span splits the table cell on GitHub")
        previous = line
    problems += [f"{b.line}: a fence inside a list item" for b in fenced_blocks(document) if b.indent]
    assert not problems, [f"{_name(document)}:{p}" for p in problems]
