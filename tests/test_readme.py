"""The README's commands table names every command-line flag, and its Python snippet runs."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from sidecar.cli.main import build_parser

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    return [
        flag
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction)
        for flag in action.option_strings
        if flag.startswith("--")
    ]


def _section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def test_every_command_and_flag_is_in_the_commands_table() -> None:
    table = _section("Commands")
    rows = {
        match.group(1): match.group(0)
        for match in re.finditer(r"^\| `llm-sidecar ([a-z-]+)[^\n]*$", table, re.MULTILINE)
    }
    commands = _commands()
    assert set(rows) == set(commands)
    missing = [
        f"{name} {flag}"
        for name, parser in commands.items()
        for flag in _flags(parser)
        if f"{flag} " not in rows[name] and f"{flag}]" not in rows[name]
    ]
    assert missing == []
    for flag in _flags(build_parser()):  # the global ones, given before the command
        assert f"`{flag}" in table, flag


def test_the_python_snippet_is_a_complete_program() -> None:
    quick = _section("Quick start")
    (snippet,) = re.findall(r"```python\n(.*?)```", quick, re.DOTALL)
    compile(snippet, "README.md", "exec")  # no top-level `async with`
    assert "asyncio.run(main())" in snippet


def test_no_link_leaves_the_repository() -> None:
    for target in re.findall(r"`(\.\./[^`]+)`|\]\((\.\./[^)]+)\)", README):
        assert not any(target), f"the README points outside the repository: {target}"
