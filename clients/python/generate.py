#!/usr/bin/env python3
"""Generates the grants.v1 Python stubs from ../../proto with grpcio-tools.

Writes messages (*_pb2.py), typing stubs (*_pb2.pyi) and gRPC stubs (*_pb2_grpc.py)
into grantd_client/_gen/ (gitignored). Run it again whenever proto/ changes:

    python generate.py
"""

from __future__ import annotations

import pathlib
import shutil
import sys

import grpc_tools
from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
OUT = HERE / "grantd_client" / "_gen"


def main() -> int:
    protos = sorted(p.relative_to(PROTO_ROOT).as_posix() for p in PROTO_ROOT.glob("grants/v1/*.proto"))
    if not protos:
        print(f"no .proto files under {PROTO_ROOT}/grants/v1", file=sys.stderr)
        return 1
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    # google/protobuf/*.proto (timestamp.proto) ship inside grpcio-tools.
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={OUT}",
        f"--pyi_out={OUT}",
        f"--grpc_python_out={OUT}",
        *protos,
    ]
    code = protoc.main(args)
    if code != 0:
        print(f"protoc failed with exit code {code}", file=sys.stderr)
        return code
    # The generated modules import each other as `grants.v1.x_pb2`: make `_gen` the
    # root of that package tree (grantd_client puts it on sys.path).
    for pkg in (OUT, OUT / "grants", OUT / "grants" / "v1"):
        (pkg / "__init__.py").touch()
    print(f"generated {len(protos)} files from {PROTO_ROOT} into {OUT.relative_to(HERE)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
