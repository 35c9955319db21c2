// Starts a grantd of its own (GRANTD_BIN, default ../../target/debug/grantd) in a
// temporary directory, over SQLite, on a free loopback port.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface Grantd {
  address: string;
  token(subject: string, admin?: boolean): string;
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect(port, '127.0.0.1');
    sock.once('connect', () => (sock.destroy(), resolve(true)));
    sock.once('error', () => resolve(false));
  });
}

export async function startGrantd(): Promise<Grantd> {
  const bin = process.env.GRANTD_BIN ?? fileURLToPath(new URL('../../../target/debug/grantd', import.meta.url));
  try {
    accessSync(bin, constants.X_OK);
  } catch {
    throw new Error(`grantd binary ${bin} not found: build it with \`cargo build\` or set GRANTD_BIN`);
  }
  const dir = mkdtempSync(join(tmpdir(), 'grantd-ts-'));
  const port = await freePort();
  const address = `127.0.0.1:${port}`;
  const log = openSync(join(dir, 'grantd.log'), 'w');
  const child: ChildProcess = spawn(bin, ['serve', '--listen', address], { cwd: dir, stdio: ['ignore', log, log] });
  let exited = false;
  child.once('exit', () => (exited = true));
  const deadline = Date.now() + 60_000;
  while (!(await canConnect(port))) {
    if (exited) throw new Error(`grantd exited with ${child.exitCode}:\n${readFileSync(join(dir, 'grantd.log'), 'utf8')}`);
    if (Date.now() > deadline) throw new Error(`grantd did not listen on ${address} within 60 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    address,
    token: (subject, admin = false) =>
      execFileSync(bin, ['token', '--subject', subject, ...(admin ? ['--admin'] : [])], { cwd: dir, encoding: 'utf8' }).trim(),
    stop: () =>
      new Promise<void>((resolve) => {
        const done = () => {
          rmSync(dir, { recursive: true, force: true });
          resolve();
        };
        if (exited) return done();
        const kill = setTimeout(() => child.kill('SIGKILL'), 15_000);
        child.once('exit', () => (clearTimeout(kill), done()));
        child.kill('SIGTERM');
      }),
  };
}
