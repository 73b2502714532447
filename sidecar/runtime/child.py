"""Child processes started by the standard library's fork-exec and watched by the loop.

Not `asyncio.create_subprocess_exec`: on uvloop that runs the interpreter's after-fork
hooks in the child before exec, and a fork of a multi-threaded process (gRPC's threads,
an executor's) can then die of SIGSEGV before it execs. The standard library runs no
Python code between fork and exec. Exit is awaited through a pidfd, so no thread waits.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Mapping, Sequence

# What `spawn` does with a child's stdout / stderr, as `subprocess` spells it.
PIPE = subprocess.PIPE
STDOUT = subprocess.STDOUT
DEVNULL = subprocess.DEVNULL
INHERIT = None


class Child:
    """A running child; `stdout` is a stream reader when its output was piped."""

    def __init__(self, popen: subprocess.Popen[bytes], stdout: asyncio.StreamReader | None):
        self.popen = popen
        self.stdout = stdout

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def send_signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def terminate(self) -> None:
        self.popen.terminate()

    def kill(self) -> None:
        self.popen.kill()

    async def wait(self) -> int:
        """The exit status, once the process has exited."""
        if self.popen.poll() is None:
            loop = asyncio.get_running_loop()
            exited = asyncio.Event()
            fd = os.pidfd_open(self.popen.pid)
            loop.add_reader(fd, exited.set)
            try:
                if self.popen.poll() is None:
                    await exited.wait()
            finally:
                loop.remove_reader(fd)
                os.close(fd)
        return self.popen.wait()


async def spawn(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    stdout: int | None = PIPE,
    stderr: int | None = STDOUT,
) -> Child:
    """Start `argv` in a session of its own. `env` adds to this process's environment;
    `stdout` and `stderr` are PIPE, STDOUT (stderr into the stdout pipe), DEVNULL or
    INHERIT."""
    # The fork-exec itself takes a few milliseconds: off the loop.
    popen = await asyncio.to_thread(
        subprocess.Popen,
        list(argv),
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
        env=None if env is None else {**os.environ, **env},
    )
    if popen.stdout is None:
        return Child(popen, None)
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), popen.stdout)
    return Child(popen, reader)
