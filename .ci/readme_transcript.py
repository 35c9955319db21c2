#!/usr/bin/env python3
"""Replays README.md's grpcurl session against a fresh grantd and compares the answers.

Every ```console block of README.md is part of one session, in order: `$ ` lines are
commands, the lines after them what the command printed. The session runs in an empty
directory against `grantd serve` started there (SQLite, generated secret), as a reader
would run it, with two substitutions: the built binary for `cargo run -q --`, and a free
port for 127.0.0.1:50051. Values that differ from run to run are compared by shape:
timestamps, page tokens, and UUIDs, which must recur where README's recur (the same id
in two places of README is the same id in the run).

    python3 .ci/readme_transcript.py [--grantd target/debug/grantd] [--grpcurl grpcurl] [--write]

--write copies this run's answers into README.md (after changing a command or the
product), so that README shows what a real run printed.
"""

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README_ADDRESS = "127.0.0.1:50051"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
PAGE_TOKEN = re.compile(r'("nextPageToken": )"[^"]*"')


def session(readme: str) -> list[tuple[str, list[str]]]:
    """(command, expected output lines) for every `$ ` line of every console block."""
    steps: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", readme, re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif steps:
                steps[-1][1].append(line)
            else:
                raise SystemExit(f"README.md: console output before any command: {line!r}")
    return steps


class Shapes:
    """Replaces run-dependent values by placeholders; each UUID gets the number of its
    first appearance, so README's and the run's ids must recur alike."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def __call__(self, text: str) -> str:
        text = PAGE_TOKEN.sub(r'\1"<page token>"', text)
        text = TIMESTAMP.sub("<time>", text)
        return UUID.sub(lambda m: f"<id {self.ids.setdefault(m.group(0), len(self.ids) + 1)}>", text)


def rewritten(readme: str, answers: list[str]) -> str:
    """README.md with each command's output replaced by `answers`, in order."""
    remaining = iter(answers)

    def block(match: re.Match) -> str:
        lines: list[str] = []
        for line in match.group(1).splitlines():
            if line.startswith("$ "):
                lines.append(line)
                answer = next(remaining)
                if answer:
                    lines.extend(answer.splitlines())
        return "```console\n" + "\n".join(lines) + "\n```"

    return re.sub(r"```console\n(.*?)```", block, readme, flags=re.S)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grantd", default=os.environ.get("GRANTD_BIN", str(ROOT / "target/debug/grantd")))
    parser.add_argument("--grpcurl", default="grpcurl")
    parser.add_argument("--write", action="store_true", help="put this run's answers into README.md")
    args = parser.parse_args()
    grantd = str(Path(args.grantd).resolve())
    readme = (ROOT / "README.md").read_text()
    steps = session(readme)
    if not steps:
        raise SystemExit("README.md has no console session")

    address = f"127.0.0.1:{free_port()}"
    workdir = Path(tempfile.mkdtemp(prefix="grantd-readme-"))
    env_file = workdir / "session.env"
    env_file.write_text("")
    log = open(workdir / "grantd.log", "w")
    server = subprocess.Popen([grantd, "serve", "--listen", address], cwd=workdir, stdout=log, stderr=log)
    try:
        for _ in range(100):
            if subprocess.run([grantd, "health", "--addr", address], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise SystemExit(f"grantd did not start; see {workdir / 'grantd.log'}")
        expected_shapes, actual_shapes = Shapes(), Shapes()
        failures = 0
        answers: list[str] = []
        for command, expected in steps:
            runnable = command.replace("cargo run -q --", f"'{grantd}'").replace(README_ADDRESS, address)
            runnable = re.sub(r"^grpcurl ", f"'{args.grpcurl}' ", runnable)
            # Each command runs in a fresh bash that sees what earlier ones exported.
            script = f". '{env_file}'\n{runnable}\nexport -p > '{env_file}'\n"
            result = subprocess.run(["bash", "-c", script], cwd=workdir, capture_output=True, text=True)
            printed = (result.stdout + result.stderr).rstrip("\n").replace(address, README_ADDRESS)
            want = "\n".join(expected).rstrip("\n")
            answers.append(printed)
            if expected_shapes(want) != actual_shapes(printed):
                failures += 1
                print(f"MISMATCH: $ {command}\n--- README.md\n{want}\n--- this run\n{printed}\n", file=sys.stderr)
            else:
                print(f"ok: $ {command[:100]}")
        print(f"{len(steps) - failures} of {len(steps)} README commands answered as README shows")
        if args.write:
            (ROOT / "README.md").write_text(rewritten(readme, answers))
            print("README.md now shows this run's answers")
            return 0
        return 1 if failures else 0
    finally:
        server.terminate()
        server.wait(timeout=15)


if __name__ == "__main__":
    sys.exit(main())
