// Processes started by the benchmarks. Every one is tracked by its PID and stopped by that PID
// (never by name); whatever is still running when the bench process exits is killed.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';

const live = new Set<Proc>();

export class Proc {
  child: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();

  constructor(
    readonly name: string,
    readonly cmd: string,
    readonly args: string[],
    readonly logFile: string,
    readonly env: NodeJS.ProcessEnv = process.env,
  ) {}

  get pid(): number | undefined {
    return this.child?.pid;
  }

  running(): boolean {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  start(): this {
    if (this.running()) throw new Error(`${this.name} is already running (pid ${this.pid})`);
    const out = createWriteStream(this.logFile, { flags: 'a' });
    const c = spawn(this.cmd, this.args, { stdio: ['ignore', 'pipe', 'pipe'], env: this.env });
    c.stdout!.pipe(out);
    c.stderr!.pipe(out);
    c.on('error', (e) => out.write(`spawn error: ${e.message}\n`));
    this.child = c;
    live.add(this);
    this.exited = new Promise((r) =>
      c.once('exit', () => {
        live.delete(this);
        r();
      }),
    );
    return this;
  }

  /** Sends `sig` to this process (by PID) and waits for it to exit (SIGKILL after `graceMs`). */
  async stop(sig: NodeJS.Signals = 'SIGKILL', graceMs = 5000): Promise<void> {
    const c = this.child;
    if (!c || !this.running()) return;
    try {
      process.kill(c.pid!, sig);
    } catch {
      /* already gone */
    }
    const t = setTimeout(() => {
      try {
        if (this.running()) process.kill(c.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
    }, graceMs);
    await this.exited;
    clearTimeout(t);
  }

  waitExit(): Promise<void> {
    return this.exited;
  }
}

/** Kills (by PID) every process the benchmarks started that is still running. */
export async function stopAll(): Promise<void> {
  await Promise.all([...live].map((p) => p.stop('SIGKILL')));
}

function killAllSync(): void {
  for (const p of live) {
    try {
      if (p.pid) process.kill(p.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

process.on('exit', killAllSync);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    killAllSync();
    process.exit(130);
  });
}
