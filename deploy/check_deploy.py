#!/usr/bin/env python3
"""Checks deploy/ and the Dockerfile against the grantd binary that CI built, since no
Docker engine or Kubernetes cluster is available here.

Static checks (always):
  * every GRANTD_* variable and --flag given to grantd in the Kubernetes manifests, the
    compose file and the Dockerfile is one that `grantd <subcommand> --help` lists;
  * every command that runs grantd (args, healthchecks, HEALTHCHECK) names a real
    subcommand;
  * Kubernetes: 3 replicas, gRPC startup/readiness probes on the container port,
    Service and PodDisruptionBudget selecting the Deployment's pods, a PostgreSQL URL;
  * the port in GRANTD_LISTEN, EXPOSE, containerPort, probes and Service agree.

Live check (when PostgreSQL answers on 127.0.0.1:5432, or GRANTD_CHECK_POSTGRES_URL):
  * starts the binary with the Deployment's environment (database URL and secret path
    swapped for local ones, loopback port) and runs the HEALTHCHECK command from the
    Dockerfile against it, which must answer SERVING.

Usage: python check_deploy.py GRANTD_BIN
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

import yaml

DEPLOY = pathlib.Path(__file__).resolve().parent
REPO = DEPLOY.parent
errors: list[str] = []


def check(cond: bool, what: str) -> None:
    print(f"  {'ok  ' if cond else 'FAIL'} {what}")
    if not cond:
        errors.append(what)


class Cli:
    def __init__(self, binary: str) -> None:
        self.binary = binary
        top = self._help([])
        self.subcommands = set(re.findall(r"^  ([a-z]+)\s", top.split("Commands:")[1].split("Options:")[0], re.M))
        self.flags: dict[str, set[str]] = {}
        self.envs: dict[str, set[str]] = {}
        for sub in self.subcommands - {"help"}:
            text = self._help([sub])
            self.flags[sub] = set(re.findall(r"(--[a-z0-9-]+)", text))
            self.envs[sub] = set(re.findall(r"\[env: ([A-Z0-9_]+)=", text))

    def _help(self, sub: list[str]) -> str:
        return subprocess.run([self.binary, *sub, "--help"], check=True, capture_output=True, text=True).stdout

    def check_command(self, argv: list[str], where: str) -> None:
        if argv and pathlib.PurePath(argv[0]).name == "grantd":
            argv = argv[1:]
        check(bool(argv) and argv[0] in self.subcommands, f"{where}: `grantd {argv[0] if argv else ''}` is a subcommand")
        if not argv or argv[0] not in self.flags:
            return
        for arg in argv[1:]:
            if arg.startswith("--"):
                flag = arg.split("=", 1)[0]
                check(flag in self.flags[argv[0]], f"{where}: `grantd {argv[0]} {flag}` exists")

    def check_env(self, names: list[str], where: str, sub: str = "serve") -> None:
        for name in names:
            if name.startswith("GRANTD_"):
                check(name in self.envs[sub], f"{where}: {name} is read by `grantd {sub}`")


def dockerfile_healthcheck() -> list[str]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    m = re.search(r"^HEALTHCHECK\b.*?\bCMD\s+(\[.*\])\s*$", text, re.M)
    return json.loads(m.group(1)) if m else []


def main(binary: str) -> int:
    cli = Cli(binary)
    print(f"grantd subcommands: {', '.join(sorted(cli.subcommands - {'help'}))}")

    print("Dockerfile")
    docker = (REPO / "Dockerfile").read_text()
    health = dockerfile_healthcheck()
    if "health" in cli.subcommands:
        check(bool(health), "HEALTHCHECK present (grantd health exists)")
    if health:
        cli.check_command(health, "Dockerfile HEALTHCHECK")
    docker_envs = re.findall(r"^ENV\s+([A-Z0-9_]+)=(\S+)", docker, re.M)
    cli.check_env([k for k, _ in docker_envs], "Dockerfile ENV")
    listen = dict(docker_envs).get("GRANTD_LISTEN", "")
    check(re.search(r"^EXPOSE 50051$", docker, re.M) is not None and listen.endswith(":50051"), "EXPOSE 50051 = GRANTD_LISTEN port")
    check(re.search(r"^USER (?!root|0\b)\S+", docker, re.M) is not None, "runs as a non-root USER")
    check(re.search(r"^VOLUME ", docker, re.M) is not None, "VOLUME for the SQLite file")

    print("deploy/kubernetes")
    docs = [d for f in sorted((DEPLOY / "kubernetes").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    dep, svc, pdb = by_kind.get("Deployment"), by_kind.get("Service"), by_kind.get("PodDisruptionBudget")
    check(dep is not None and svc is not None and pdb is not None, "Deployment, Service and PodDisruptionBudget present")
    if dep and svc and pdb:
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        selects = lambda sel: all(pod_labels.get(k) == v for k, v in sel.items())  # noqa: E731
        check(dep["spec"]["replicas"] == 3, "Deployment has 3 replicas")
        check(selects(dep["spec"]["selector"]["matchLabels"]), "Deployment selector matches its pods")
        check(selects(svc["spec"]["selector"]), "Service selects the pods")
        check(selects(pdb["spec"]["selector"]["matchLabels"]), "PodDisruptionBudget selects the pods")
        check(pdb["spec"].get("minAvailable", 0) < dep["spec"]["replicas"], "PodDisruptionBudget allows one disruption")
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        ports = {p.get("name"): p["containerPort"] for p in c["ports"]}
        env = {e["name"]: e for e in c["env"]}
        cli.check_env(list(env), "Deployment env")
        cli.check_command(c.get("args", []), "Deployment args")
        check(env["GRANTD_LISTEN"]["value"].endswith(f":{ports['grpc']}"), "GRANTD_LISTEN port = containerPort")
        check("secretKeyRef" in env["GRANTD_DATABASE_URL"].get("valueFrom", {}), "database URL comes from a Secret")
        check("GRANTD_JWT_HS256_SECRET_FILE" in env or "GRANTD_JWKS_FILE" in env, "a token key is configured (required with PostgreSQL)")
        for probe in ("startupProbe", "readinessProbe"):
            check(c[probe].get("grpc", {}).get("port") == ports["grpc"], f"{probe} is a gRPC probe on the container port")
        live = c["livenessProbe"]
        check((live.get("grpc") or live.get("tcpSocket") or {}).get("port") == ports["grpc"], "livenessProbe on the container port")
        for sp in svc["spec"]["ports"]:
            target = sp["targetPort"]
            check(target in ports or target in ports.values(), f"Service port {sp['name']} targets a container port")
        if "GRANTD_METRICS_LISTEN" in env:
            check(env["GRANTD_METRICS_LISTEN"]["value"].endswith(f":{ports.get('metrics')}"), "GRANTD_METRICS_LISTEN port = metrics containerPort")
        sc = dep["spec"]["template"]["spec"]["securityContext"]
        check(sc.get("runAsNonRoot") is True and sc.get("runAsUser") == 10001, "pods run as the image's non-root user")
        grace = int(env.get("GRANTD_SHUTDOWN_GRACE_MS", {}).get("value", "10000")) / 1000
        check(dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace + 5, "terminationGracePeriodSeconds > shutdown grace + preStop")

    print("deploy/compose")
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    g = compose["services"]["grantd"]
    cli.check_env(list(g["environment"]), "compose environment")
    cli.check_command(g["command"], "compose command")
    cli.check_command(g["healthcheck"]["test"][1:], "compose healthcheck")
    check(g["environment"]["GRANTD_DATABASE_URL"].startswith("postgres://"), "compose runs over PostgreSQL")
    check(g["environment"]["GRANTD_LISTEN"].endswith(":50051"), "compose GRANTD_LISTEN port 50051")

    print("live: the Deployment's environment and the Dockerfile's HEALTHCHECK against the binary")
    live_check(binary, {k: v.get("value", "") for k, v in env.items()} if dep else {}, health)

    if errors:
        print(f"\n{len(errors)} check(s) failed:")
        for e in errors:
            print(f"  - {e}")
        return 1
    print("\nall deploy checks passed")
    return 0


def live_check(binary: str, env: dict[str, str], health: list[str]) -> None:
    admin_url = os.environ.get("GRANTD_CHECK_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    if subprocess.run(["psql", admin_url, "-qAtc", "select 1"], capture_output=True).returncode != 0:
        print(f"  SKIP PostgreSQL not reachable at {admin_url}")
        return
    db = f"grantd_deploy_check_{uuid.uuid4().hex[:8]}"
    subprocess.run(["psql", admin_url, "-qc", f'create database "{db}"'], check=True, capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        secret = pathlib.Path(tmp) / "jwt-secret"
        secret.write_bytes(os.urandom(32).hex().encode())
        run_env = {k: v for k, v in os.environ.items() if not k.startswith("GRANTD_")}
        run_env.update(env)
        run_env.update(
            GRANTD_LISTEN=f"127.0.0.1:{port}",
            GRANTD_DATABASE_URL=admin_url.rsplit("/", 1)[0] + f"/{db}",
            GRANTD_JWT_HS256_SECRET_FILE=str(secret),
        )
        metrics_port = None
        if "GRANTD_METRICS_LISTEN" in env:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                metrics_port = s.getsockname()[1]
            run_env["GRANTD_METRICS_LISTEN"] = f"127.0.0.1:{metrics_port}"
        proc = subprocess.Popen([binary, "serve"], env=run_env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            probe = [binary, *health[1:]] if health else [binary, "health"]
            probe = [a if a != "127.0.0.1:50051" else f"127.0.0.1:{port}" for a in probe]
            if "--addr" not in probe:
                probe += ["--addr", f"127.0.0.1:{port}"]
            deadline, answer = time.monotonic() + 60, None
            while time.monotonic() < deadline and proc.poll() is None:
                answer = subprocess.run(probe, capture_output=True, text=True)
                if answer.returncode == 0:
                    break
                time.sleep(0.5)
            check(answer is not None and answer.returncode == 0, f"`{shlex.join(probe[1:])}` answers SERVING for grantd started with the Deployment's env over PostgreSQL")
            token = subprocess.run([binary, "token", "--subject", "root", "--admin"], env=run_env, capture_output=True, text=True)
            check(token.returncode == 0 and token.stdout.count(".") == 2, "`grantd token` mints with the secret file named by the Deployment's env")
            if metrics_port is not None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
                        body = r.read().decode()
                except OSError as e:
                    body = str(e)
                check("grantd_" in body, "GRANTD_METRICS_LISTEN serves Prometheus metrics at /metrics")
        finally:
            proc.terminate()
            try:
                out, _ = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            check(proc.returncode == 0, f"grantd stopped cleanly on SIGTERM (exit {proc.returncode})")
            if errors:
                print(out.decode(errors="replace")[-3000:])
            subprocess.run(["psql", admin_url, "-qc", f'drop database if exists "{db}"'], capture_output=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else str(REPO / "target" / "debug" / "grantd")))
