"""The docs say what the code does: every `fastcredit ...` command quoted in README.md and
docs/ parses with the real command line (an unknown option or a bad value fails here), each
subcommand's --help runs, and every repository path they name exists."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from fastcredit.app import cli

ROOT = Path(__file__).resolve().parent.parent
# benchmarks/ is not in the sdist (whose tests CI runs too): what is there is checked.
DOCS = [p for p in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
                    ROOT / "benchmarks/NOTES.md") if p.exists()]
PLACEHOLDER = re.compile(r"\b[A-Z][A-Z0-9_]+\b|\.\.\.|<[^>]*>|\|")
# Values for the placeholders the docs use, so such a command is still parsed whole.
SUBSTITUTES = {"NAME": "fashion-mnist-methods", "DATA": "data", "DIR": "dir", "TEXT": "x",
               "PATH": "out.json"}


def _commands() -> list[tuple[str, str]]:
    """(file, command) for each `fastcredit <subcommand> ...` in a code block (one per line) or
    in inline code (which may wrap across lines)."""
    found = []
    start = re.compile(r"(?<![\w./-])fastcredit (?:train|reproduce|bench|info)(?![\w:-])")
    for path in DOCS:
        text = path.read_text()
        blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.DOTALL)
        spans = re.findall(r"`([^`]+)`", re.sub(r"```.*?```", "", text, flags=re.DOTALL))
        pieces = [line for block in blocks for line in block.splitlines()]
        pieces += [span.replace("\n", " ") for span in spans]
        for piece in pieces:
            for match in start.finditer(piece):
                command = re.split(r"[;&|)]", piece[match.start():])[0].strip()
                found.append((path.name, command))
    return found


COMMANDS = _commands()


def test_the_docs_quote_commands():
    assert len(COMMANDS) >= 8
    assert any("--method bp fa dfa lra" in command for _, command in COMMANDS)


@pytest.mark.parametrize("where,command", COMMANDS, ids=[c for _, c in COMMANDS])
def test_quoted_command_parses(where, command):
    words = [SUBSTITUTES.get(w, w) for w in shlex.split(command)[1:]
             if w not in ("--help", "-h")]
    assert not PLACEHOLDER.search(" ".join(words)), f"a placeholder without a substitute: {words}"
    try:
        args = cli._parser().parse_args(words)
    except SystemExit as stop:
        pytest.fail(f"{where}: `{command}` does not parse (exit {stop.code})")
    assert args.command == words[0]


@pytest.mark.parametrize("command", ["train", "reproduce", "bench", "info"])
def test_help_runs(command):
    result = subprocess.run([sys.executable, "-m", "fastcredit", command, "--help"],
                            check=False, capture_output=True, text=True)
    assert result.returncode == 0 and "usage: fastcredit " + command in result.stdout


def _paths() -> list[tuple[str, str]]:
    """Repository paths named in inline code or links: tests/..., csrc/..., docs/..., ..."""
    named = []
    prefixes = ("fastcredit/", "tests/", "csrc/", "docs/", "benchmarks/", ".ci/")
    for path in DOCS:
        text = path.read_text()
        code = [c.split("::")[0] for c in re.findall(r"`([^`\s]+)`", text)]  # pytest ids
        links = re.findall(r"\]\(([^)#\s]+)", text)
        for candidate in code + links:
            if (candidate.startswith("http") or re.search(r"[*<{]|\.\.\.", candidate)
                    or PLACEHOLDER.search(candidate)):
                continue
            if candidate.startswith(prefixes) or candidate in links:
                named.append((path.name, candidate, (path.parent / candidate).resolve()))
    return named


@pytest.mark.skipif(not (ROOT / ".git").exists(),
                    reason="not a git checkout: an sdist ships only part of the tree")
def test_named_paths_exist():
    missing = []
    for where, candidate, resolved in _paths():
        if (ROOT / candidate).exists() or resolved.exists():
            continue
        missing.append(f"{where}: {candidate}")
    assert not missing, missing
