"""Generate sidecar/rpc/api/ from proto/ (run by `make proto`; a test checks it is fresh).

protoc writes absolute imports (`from llmsidecar.v1 import router_pb2`) that only
work when the proto root is on sys.path, so they are rewritten to package imports.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTO_FILES = ["llmsidecar/v1/router.proto"]
_IMPORT = re.compile(r"^from llmsidecar\.v1 import (\w+)", re.MULTILINE)


def _bin(name: str) -> str:
    # The plugins live beside the interpreter, which need not be on PATH.
    return str(Path(sys.executable).parent / name)


def generate(out_dir: Path) -> list[Path]:
    """Write the generated modules into out_dir and return their paths."""
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{Path(protoc.__file__).parent / '_proto'}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--plugin=protoc-gen-mypy={_bin('protoc-gen-mypy')}",
            f"--plugin=protoc-gen-mypy_grpc={_bin('protoc-gen-mypy_grpc')}",
            f"--mypy_out={tmp}",
            f"--mypy_grpc_out={tmp}",
            *PROTO_FILES,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        written = []
        out_dir.mkdir(parents=True, exist_ok=True)
        for src in sorted((Path(tmp) / "llmsidecar" / "v1").iterdir()):
            text = _IMPORT.sub(r"from sidecar.rpc.api import \1", src.read_text())
            dest = out_dir / src.name
            dest.write_text(text)
            written.append(dest)
        return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "sidecar" / "rpc" / "api"
    for path in generate(target):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
