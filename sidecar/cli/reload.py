"""`llm-sidecar reload`: SIGHUP to the sidecar whose pid `serve --pid-file` wrote.

A signal rather than an RPC: it needs no key and no open port, only the right to signal
the process, which is what a container's `exec` or a host's service manager has.
The outcome (applied, or rejected and why) is in the sidecar's log, and its config
hash and load time in `llm-sidecar status`.
"""

from __future__ import annotations

import os
import signal

from sidecar.errors import SidecarError
from sidecar.runtime.pidfile import read_pid


def send_reload(pid_path: str) -> str:
    try:
        pid = read_pid(pid_path)
        os.kill(pid, signal.SIGHUP)
    except ValueError as exc:
        raise SidecarError(str(exc)) from None
    except ProcessLookupError:
        raise SidecarError(f"no process {pid} (from {pid_path}): is the sidecar running?") from None
    except PermissionError:
        raise SidecarError(f"not allowed to signal process {pid} (from {pid_path})") from None
    return (
        f"asked process {pid} to reload its configuration; `llm-sidecar status` shows the "
        "config hash and load time, its log says whether the file was accepted"
    )
