"""`serve --pid-file`: where `llm-sidecar reload` (and scripts) find the process to signal."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def pid_file(path: str | None) -> Iterator[None]:
    """Write this process's pid to `path` while the block runs; remove it after, unless
    another process wrote its own there meanwhile. No path (or an empty one): no file."""
    if not path:
        yield
        return
    pid = str(os.getpid())
    with open(path, "w", encoding="ascii") as file:
        file.write(pid + "\n")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            with open(path, encoding="ascii") as file:
                still_ours = file.read().strip() == pid
            if still_ours:
                os.remove(path)


def read_pid(path: str) -> int:
    """The pid in `path`; ValueError naming the problem when there is none."""
    try:
        with open(path, encoding="ascii") as file:
            text = file.read().strip()
    except OSError as exc:
        raise ValueError(f"cannot read the pid file {path}: {exc.strerror}") from None
    if not text.isdigit() or int(text) <= 1:
        raise ValueError(f"the pid file {path} holds no process id")
    return int(text)
