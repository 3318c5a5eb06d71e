"""Generate the Python wire code from proto/ into memsidecar/<block>/v1/.

`--check` regenerates into a temporary directory and fails when the committed
files differ, so stale generated code cannot land.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(out: Path) -> list[Path]:
    sources = sorted(PROTO_DIR.rglob("*.proto"))
    include = str(resources.files("grpc_tools") / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *(str(s.relative_to(PROTO_DIR)) for s in sources),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the messages above")
    for package_dir in {p.parent for p in out.rglob("*_pb2.py")}:
        for d in (package_dir, package_dir.parent):
            init = d / "__init__.py"
            if d != out / "memsidecar" and not init.exists():
                init.write_text("")
    return sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail on stale generated code")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        files = generate(out)
        stale = [
            f for f in files if not (ROOT / f).exists() or not filecmp.cmp(out / f, ROOT / f, False)
        ]
        if opts.check:
            if stale:
                print("generated code is stale, run `make proto`:", *stale, sep="\n  ")
                return 1
            print(f"generated code is current ({len(files)} files)")
            return 0
        for f in files:
            (ROOT / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out / f, ROOT / f)
        print(f"wrote {len(files)} files ({len(stale)} changed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
