// Everyday CLI comfort (issue 24), as a user runs it: real CLI processes against a real cluster
// (one manager, two process-driver workers with labels); completion sourced in a real bash.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync, spawn } from 'node:child_process';
import { parseAllDocuments } from 'yaml';
import { TestCluster, eventually, runCli, CLI, ROOT, consecutiveFreePorts } from './helpers/cluster.js';
import { parseTaskSpec } from '../src/protocol/spec.js';
import { parseServiceSpec } from '../src/protocol/service.js';

let cluster: TestCluster;
let managers: string;
let tmp: string;
/** No cluster from the environment or a `flotilla up` directory; the config file is the test's own. */
let isolated: Record<string, string>;
const cli = (args: string[], opts: { env?: Record<string, string>; timeoutMs?: number } = {}) =>
  runCli(['--managers', managers, ...args], { ...opts, env: { ...isolated, ...cluster.cliEnv(), ...opts.env } });

interface TaskJson {
  id: string;
  name: string;
  state: string;
  desired: string;
  exitCode?: number;
  spec: { driver: string; labels: Record<string, string> };
}

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'flotilla-daily-'));
  isolated = { FLOTILLA_MANAGERS: '', FLOTILLA_DIR: join(tmp, 'no-up-dir'), FLOTILLA_CONFIG: join(tmp, 'config.json'), FLOTILLA_CONTEXT: '', FLOTILLA_TOKEN: '', FLOTILLA_TOKEN_FILE: '', FLOTILLA_CA: '' };
  // TLS, as users run it: the API wants a token or the admin client certificate.
  cluster = await TestCluster.managers(1, ['--allow-privileged'], { tls: true });
  managers = cluster.addrs().join(',');
  cluster.startWorker('w1', ['--labels', 'zone=a,disk=ssd']);
  cluster.startWorker('w2', ['--labels', 'zone=b']);
  await eventually(async () => (await cluster.client().get<{ nodes: { status: string }[] }>('/v1/nodes')).nodes.filter((n) => n.status === 'ready').length === 2, 20_000, 'workers ready');
}, 60_000);

afterAll(async () => {
  const r = await cli(['ps', '-o', 'json']).catch(() => null);
  if (r?.status === 0) for (const t of JSON.parse(r.stdout) as { id: string }[]) await cli(['stop', t.id]);
  await cluster.stop();
  rmSync(tmp, { recursive: true, force: true });
});

/** Completions bash offers for the words typed so far (the last one is being completed). */
function complete(script: string, words: string[]): string[] {
  const arr = words.map((w) => `'${w.replace(/'/g, `'\\''`)}'`).join(' ');
  const out = execFileSync('bash', ['--norc', '--noprofile', '-c', `source "$1"; COMP_WORDS=(${arr}); COMP_CWORD=${words.length - 1}; _flotilla; printf '%s\\n' "\${COMPREPLY[@]}"; complete -p flotilla`, 'bash', script], { encoding: 'utf8' });
  const lines = out.trim().split('\n');
  expect(lines.pop()).toMatch(/complete .*-F _flotilla flotilla/);
  return lines.filter(Boolean);
}

describe('completion', () => {
  it('bash: completes every command, subcommands, flags and flag values, generated from the program', async () => {
    const r = await runCli(['completion', 'bash']);
    expect(r.status, r.stderr).toBe(0);
    const script = join(tmp, 'flotilla.bash');
    writeFileSync(script, r.stdout);
    // Every command `flotilla --help` lists is offered at the top level.
    const help = (await runCli(['--help'])).stdout;
    const listed = [...help.slice(help.indexOf('Commands:')).matchAll(/^ {2}([a-z][a-z-]*)/gm)].map((m) => m[1]!);
    expect(listed).toContain('run');
    const top = complete(script, ['flotilla', '']);
    for (const c of listed) expect(top, c).toContain(c);
    expect(complete(script, ['flotilla', 'ap'])).toEqual(['apply']);
    expect(complete(script, ['flotilla', 'context', 'u'])).toEqual(['use']);
    expect(complete(script, ['flotilla', 'node', 'd'])).toEqual(['drain']);
    // Flags of the command being typed, global flags too; an option's value is not a command.
    expect(complete(script, ['flotilla', 'ps', '--sel'])).toEqual(['--selector']);
    expect(complete(script, ['flotilla', '--managers', '127.0.0.1', ':', '7001', 'nodes', '--con'])).toEqual(['--context']);
    expect(complete(script, ['flotilla', 'run', '--name', 'ps', '--det'])).toEqual(['--detach']);
    expect(complete(script, ['flotilla', 'ps', '-o', ''])).toEqual(['table', 'wide', 'json', 'yaml']);
    expect(complete(script, ['flotilla', 'run', '--driver', 'p'])).toEqual(['process']);
    // After `--` come the task's own words.
    expect(complete(script, ['flotilla', 'run', '--', '/bin/sh', '-'])).toEqual([]);
  }, 180_000);

  it('zsh: the same completion through bashcompinit; another shell is a usage error', async () => {
    const z = await runCli(['completion', 'zsh']);
    expect(z.status).toBe(0);
    expect(z.stdout.split('\n')[0]).toBe('#compdef flotilla');
    expect(z.stdout).toContain('bashcompinit');
    expect(z.stdout).toContain('complete -o default -F _flotilla flotilla');
    // In zsh itself (when installed): bashcompinit runs the function; zsh's own matcher then
    // filters by the typed prefix, so compare the candidate sets.
    let zsh = true;
    try {
      execFileSync('zsh', ['-f', '-c', 'true']);
    } catch {
      zsh = false;
    }
    if (zsh) {
      const script = join(tmp, 'flotilla.zsh');
      writeFileSync(script, z.stdout);
      const zc = (words: string[]) =>
        execFileSync('zsh', ['-f', '-c', `autoload -U compinit && compinit -u -D; source "$1"; shift; local -a COMP_WORDS; COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); compgen -F _flotilla -- "\${@[-1]}"`, 'zsh', script, ...words], { encoding: 'utf8' }).trim().split('\n');
      expect(zc(['flotilla', 'node', 'd'])).toEqual(['drain', 'pause', 'activate']);
      expect(zc(['flotilla', 'ps', '-o', ''])).toEqual(['table', 'wide', 'json', 'yaml']);
      expect(zc(['flotilla', 'ps', '--sel'])).toContain('--selector');
      expect(zc(['flotilla', 'ps', '--sel'])).not.toContain('--detach');
    } else process.stderr.write('zsh is not installed: the zsh script was checked by its text only\n');
    const fish = await runCli(['completion', 'fish']);
    expect(fish.status).toBe(2);
    expect(fish.stderr).toMatch(/bash or zsh/);
  }, 180_000);
});

describe('contexts', () => {
  const env = () => ({ ...isolated, FLOTILLA_CONFIG: join(tmp, 'ctx.json') });
  const run = (args: string[], extra: Record<string, string> = {}) => runCli(args, { env: { ...env(), ...extra }, timeoutMs: 60_000 });

  it('set, use, ls: the CLI finds the cluster without FLOTILLA_* exported; flags > env > context', async () => {
    const none = await run(['ps']);
    expect(none.status).toBe(2);
    expect(none.stderr).toMatch(/context use/);
    // A real API token, and the cluster's CA in a directory of its own (no admin certificate beside it).
    const token = join(tmp, 'lab-token');
    const made = await cli(['token', 'create', '--role', 'viewer', '--out', token]);
    expect(made.status, made.stderr).toBe(0);
    const ca = join(tmp, 'lab-ca.crt');
    writeFileSync(ca, readFileSync(cluster.cliEnv().FLOTILLA_CA!));
    const set = await run(['context', 'set', 'lab', '--managers', managers, '--token-file', token, '--ca-file', ca]);
    expect(set.status, set.stderr).toBe(0);
    expect(set.stdout).toMatch(/context lab created/);
    expect((await run(['context', 'set', 'dead', '--managers', '127.0.0.1:9'])).status).toBe(0);
    // Not current yet: still no cluster.
    expect((await run(['ps'])).status).toBe(2);
    const use = await run(['context', 'use', 'lab']);
    expect(use.stdout).toContain('current context: lab');
    const ps = await run(['nodes']);
    expect(ps.status, ps.stderr).toBe(0);
    expect(ps.stdout).toMatch(/w1\s+ready/);
    const ls = await run(['context', 'ls']);
    expect(ls.stdout).toMatch(/\*\s+lab\s+127\.0\.0\.1:\d+/);
    expect(ls.stdout).toMatch(/^\s+dead\s+127\.0\.0\.1:9/m);
    expect((await run(['context', 'ls', '-q'])).stdout).toBe('dead\nlab\n');
    const stored = JSON.parse(readFileSync(join(tmp, 'ctx.json'), 'utf8'));
    expect(stored.current).toBe('lab');
    expect(stored.contexts.lab.tokenFile).toBe(token);
    expect(stored.contexts.lab.caFile).toBe(ca);
    // The context's token is the one sent: a viewer may read but not write.
    const write = await run(['kv', 'put', 'ctx/x', '1']);
    expect(write.status).toBe(1);
    expect(write.stderr).toMatch(/viewer|forbidden|not allowed|admin/i);
    // The context's token file is what the CLI reads: gone, it says so.
    rmSync(token);
    const noToken = await run(['nodes']);
    expect(noToken.status).toBe(2);
    expect(noToken.stderr).toContain(`cannot read the token file ${token} (context lab)`);
    // A token from the environment beats the context's (this one is refused).
    const envToken = await run(['nodes'], { FLOTILLA_TOKEN: 'flt_not-a-token' });
    expect(envToken.status).toBe(1);
    expect(envToken.stderr).not.toContain('context lab');
    expect((await cli(['token', 'create', '--role', 'viewer', '--out', token])).status).toBe(0);
    // FLOTILLA_CONTEXT beats the current one; --context beats FLOTILLA_CONTEXT; --managers beats both.
    const viaFlag = await run(['--context', 'lab', 'nodes'], { FLOTILLA_CONTEXT: 'dead' });
    expect(viaFlag.status, viaFlag.stderr).toBe(0);
    const viaEnv = await run(['--managers', managers, 'nodes'], { FLOTILLA_CONTEXT: 'nope', ...cluster.cliEnv() });
    expect(viaEnv.status, viaEnv.stderr).toBe(0);
    expect((await run(['nodes'], { FLOTILLA_MANAGERS: managers, ...cluster.cliEnv() })).status).toBe(0);
    const unknown = await run(['nodes'], { FLOTILLA_CONTEXT: 'nope' });
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toMatch(/no context 'nope' \(FLOTILLA_CONTEXT\)/);
    const useUnknown = await run(['context', 'use', 'nope']);
    expect(useUnknown.status).toBe(2);
    expect(useUnknown.stderr).toMatch(/no context 'nope'.*there are: dead, lab/);
    expect((await run(['context', 'set', 'new-one'])).stderr).toMatch(/give its managers with --managers/);
    expect((await run(['context', 'set', 'Bad Name', '--managers', managers])).status).toBe(2);
    expect((await run(['context', 'rm', 'dead'])).status).toBe(0);
    expect((await run(['context', 'ls', '-q'])).stdout).toBe('lab\n');
  }, 300_000);

  it('a bad config file is a clear error and is left as it was', async () => {
    const f = join(tmp, 'bad.json');
    for (const [text, msg] of [
      ['{ "contexts": ', /is not valid JSON/],
      ['{ "current": "x", "contexts": { "x": { "managers": "127.0.0.1:7001" } } }', /context 'x' needs 'managers'/],
      ['[1]', /must be a JSON object/],
    ] as const) {
      writeFileSync(f, text);
      for (const args of [['ps'], ['context', 'set', 'y', '--managers', managers]]) {
        const r = await runCli(args, { env: { ...isolated, FLOTILLA_CONFIG: f } });
        expect(r.status, args.join(' ')).toBe(2);
        expect(r.stderr).toContain(`the config file ${f}`);
        expect(r.stderr).toMatch(msg);
      }
      expect(readFileSync(f, 'utf8')).toBe(text);
    }
  }, 180_000);

  it('the up banner names FLOTILLA_DIR when --dir is not where the CLI looks', async () => {
    const dir = join(tmp, 'elsewhere');
    const port = await consecutiveFreePorts(1);
    const p = spawn(process.execPath, [CLI, 'up', '--managers', '1', '--workers', '0', '--driver', 'process', '--insecure', '--port', String(port), '--dir', dir], {
      cwd: tmp,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: Object.fromEntries(Object.entries({ ...process.env, ...isolated }).filter(([k]) => k !== 'FLOTILLA_DIR')),
    });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    const exited = new Promise((r) => p.once('exit', r));
    try {
      await eventually(() => out.includes('flotilla is up'), 45_000, 'flotilla up');
      await eventually(() => out.includes('data:'), 5_000, 'banner');
      expect(out).toContain(`export FLOTILLA_DIR=${dir}`);
      expect(out).not.toContain('from this directory just run');
    } finally {
      p.kill('SIGINT');
      await exited;
    }
  }, 180_000);
});

describe('labels and selectors', () => {
  it('run --label; ps -l and nodes -l with =, != and comma-separated AND; bad selectors are usage errors', async () => {
    const a = await cli(['run', '-d', '--name', 'lab-web', '--label', 'tier=web', '-l', 'team=pay', '-o', 'json', '--', '/bin/sleep', '600']);
    expect(a.status, a.stderr).toBe(0);
    expect((JSON.parse(a.stdout) as TaskJson[])[0]!.spec.labels).toEqual({ tier: 'web', team: 'pay' });
    expect((await cli(['run', '-d', '--name', 'lab-db', '-l', 'tier=db', '--', '/bin/sleep', '600'])).status).toBe(0);
    const names = async (sel: string[]) => {
      const r = await cli(['ps', ...sel.flatMap((s) => ['-l', s]), '-o', 'json']);
      expect(r.status, r.stderr).toBe(0);
      return (JSON.parse(r.stdout) as TaskJson[]).map((t) => t.name).filter((n) => n.startsWith('lab-')).sort();
    };
    expect(await names(['tier=web'])).toEqual(['lab-web']);
    expect(await names(['tier==db'])).toEqual(['lab-db']);
    expect(await names(['tier!=web'])).toEqual(['lab-db']);
    expect(await names(['tier=web,team=pay'])).toEqual(['lab-web']);
    expect(await names(['tier=web', 'team!=pay'])).toEqual([]);
    expect(await names(['team!=pay'])).toEqual(['lab-db']);
    const wide = await cli(['ps', '-l', 'tier=web', '-o', 'wide']);
    expect(wide.stdout).toMatch(/LABELS/);
    expect(wide.stdout).toMatch(/team=pay,tier=web|tier=web,team=pay/);
    const nodes = await cli(['nodes', '-l', 'zone=a']);
    expect(nodes.stdout).toMatch(/^w1\s/m);
    expect(nodes.stdout).not.toMatch(/^w2\s/m);
    const notA = await cli(['nodes', '-l', 'zone!=a', '-o', 'json']);
    expect((JSON.parse(notA.stdout) as { id: string }[]).map((n) => n.id)).toEqual(['w2']);
    expect((JSON.parse((await cli(['nodes', '-l', 'zone=a,disk=ssd', '-o', 'json'])).stdout) as { id: string }[]).map((n) => n.id)).toEqual(['w1']);
    for (const bad of ['tier', 'tier<web', '=web', 'a=b=c']) {
      for (const verb of ['ps', 'nodes']) {
        const r = await cli([verb, '-l', bad]);
        expect(r.status, `${verb} -l ${bad}`).toBe(2);
        expect(r.stderr).toMatch(/is not a label selector; use key=value or key!=value/);
      }
    }
    const badLabel = await cli(['run', '-d', '-l', 'novalue', '--', '/bin/true']);
    expect(badLabel.status).toBe(2);
    expect(badLabel.stderr).toMatch(/--label expects KEY=VALUE/);
    const badKey = await cli(['run', '-d', '-l', '-bad=x', '--', '/bin/true']);
    expect(badKey.status).toBe(2);
    expect(badKey.stderr).toMatch(/labels/);
    await cli(['stop', 'lab-web', 'lab-db']);
  }, 180_000);
});

describe('clearer output', () => {
  it('inspect shows published ports, labels and mounts, and commands quoted so they paste', async () => {
    const argv = ['/bin/sh', '-c', `echo "it's here"; sleep 600`, 'arg with space', '$HOME'];
    const r = await cli(['run', '--name', 'quoted', '-l', 'tier=web', '-p', '18080:8080', '-e', 'GREETING=hello world', '-o', 'json', '--', ...argv]);
    expect(r.status, r.stderr).toBe(0);
    const id = (JSON.parse(r.stdout) as TaskJson[])[0]!.id;
    const out = (await cli(['inspect', id])).stdout;
    expect(out).toMatch(/Labels:\s+tier=web/);
    expect(out).toMatch(/Ports:\s+18080->8080\/tcp/);
    expect(out).toMatch(/Mounts:\s+-/);
    expect(out).toMatch(/env:\s+'GREETING=hello world'/);
    const line = /command: (.*)/.exec(out)![1]!;
    // Pasted into a shell, the printed command gives back the same words.
    const words = execFileSync('bash', ['--norc', '-c', `printf '%s\\0' ${line}`], { encoding: 'utf8' }).split('\0').slice(0, -1);
    expect(words).toEqual(argv);
    await cli(['stop', id]);

    // Mounts (docker driver; this cluster allows them): shown with their mode. No docker node: it stays pending.
    const f = join(tmp, 'mounts.yaml');
    writeFileSync(f, 'name: mounted\ncontainers:\n  - image: flotilla/busybox:test\n    ports: ["9090:90/udp"]\nmounts: ["/srv/data:/data:ro", "/tmp:/scratch"]\n');
    const ap = await cli(['apply', '-d', '-f', f, '-o', 'json']);
    expect(ap.status, ap.stderr).toBe(0);
    const mid = (JSON.parse(ap.stdout) as TaskJson[])[0]!.id;
    const m = (await cli(['inspect', mid])).stdout;
    expect(m).toMatch(/Mounts:\s+\/srv\/data -> \/data \(read-only\), \/tmp -> \/scratch\n/);
    expect(m).toMatch(/Ports:\s+9090->90\/udp/);
    expect(m).toMatch(/image:\s+flotilla\/busybox:test/);
    expect(m).toMatch(/command: \(the image default\)/);
    await cli(['stop', mid]);
  }, 180_000);

  it('stop of a finished task says it had already finished', async () => {
    const r = await cli(['run', '--name', 'done', '--restart', 'never', '-o', 'json', '--', '/bin/sh', '-c', 'exit 0']);
    const id = (JSON.parse(r.stdout) as TaskJson[])[0]!.id;
    await eventually(async () => (JSON.parse((await cli(['inspect', id, '-o', 'json'])).stdout) as TaskJson).state === 'succeeded', 15_000, 'succeeded');
    const stop = await cli(['stop', id]);
    expect(stop.status).toBe(0);
    expect(stop.stdout).toMatch(new RegExp(`^${id} had already finished \\(succeeded, exit 0: .*exited with code 0\\)\n$`));
    const running = await cli(['run', '-d', '--name', 'live', '-o', 'json', '--', '/bin/sleep', '600']);
    const lid = (JSON.parse(running.stdout) as TaskJson[])[0]!.id;
    await eventually(async () => (JSON.parse((await cli(['inspect', lid, '-o', 'json'])).stdout) as TaskJson).state === 'running', 15_000, 'running');
    expect((await cli(['stop', lid])).stdout).toBe(`${lid} stopping\n`);
  }, 180_000);
});

describe('answers instead of waits', () => {
  it('run and apply of a task that cannot be placed return with the reason; --detach returns at once', async () => {
    // A bound far below the old 60 s of silent waiting (the answer comes in about 2 s).
    const run = await cli(['run', '--name', 'nowhere', '--constraint', 'zone==mars', '--', '/bin/sleep', '60'], { timeoutMs: 20_000 });
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(/error: nowhere-[0-9a-f]+ cannot be placed: no node satisfies constraint zone==mars \(2 nodes checked\)/);
    expect(run.stderr).toMatch(/stays pending/);
    expect(run.stdout).toMatch(/nowhere\s+pending/);
    const f = join(tmp, 'docker-task.yaml');
    writeFileSync(f, 'name: needs-docker\ncontainers:\n  - image: flotilla/busybox:test\n    command: [sleep, "60"]\n---\nname: fits\ndriver: process\ncontainers:\n  - command: [/bin/sleep, "600"]\n');
    const ap = await cli(['apply', '-f', f, '-o', 'json'], { timeoutMs: 20_000 });
    expect(ap.status).toBe(1);
    expect(ap.stderr).toMatch(/needs-docker-[0-9a-f]+ cannot be placed: no ready node with driver docker/);
    const ts = JSON.parse(ap.stdout) as TaskJson[];
    expect(ts.find((t) => t.name === 'fits')!.state).toBe('running');
    expect(ts.find((t) => t.name === 'needs-docker')!.state).toBe('pending');
    const det = await cli(['run', '-d', '--name', 'later', '--constraint', 'zone==mars', '-o', 'json', '--', '/bin/sleep', '60'], { timeoutMs: 20_000 });
    expect(det.status).toBe(0);
    expect((JSON.parse(det.stdout) as TaskJson[])[0]!.state).toBe('pending');
    for (const t of [...ts, ...(JSON.parse(det.stdout) as TaskJson[])]) await cli(['stop', t.id]);
    await cli(['stop', 'nowhere']);
  }, 180_000);
});

describe('docs', () => {
  it("README's first run example is for the default driver (docker when it answers)", async () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const first = /^npx flotilla (run .*?)(?:\s+#.*)?$/m.exec(readme)![1]!;
    const args = execFileSync('bash', ['--norc', '-c', `printf '%s\\0' ${first}`], { encoding: 'utf8' }).split('\0').slice(0, -1);
    const r = await cli([args[0]!, '-d', '-o', 'json', ...args.slice(1)]);
    expect(r.status, r.stderr).toBe(0);
    const t = (JSON.parse(r.stdout) as TaskJson[])[0]!;
    expect(t.spec.driver).toBe('docker');
    await cli(['stop', t.id]);
  }, 180_000);

  it('docs/spec.md: every field of the task spec, and each example is a valid spec', () => {
    const doc = readFileSync(join(ROOT, 'docs', 'spec.md'), 'utf8');
    const full = parseTaskSpec(
      { name: 'x', containers: [{ image: 'i', workdir: '/w', ports: ['1:2'] }], mounts: ['/a:/b'] },
      { allowHostMounts: true },
    );
    const fields = [...Object.keys(full), ...Object.keys(full.containers[0]!), ...Object.keys(full.resources), ...Object.keys(full.restart), ...Object.keys(full.containers[0]!.ports[0]!), ...Object.keys(full.mounts[0]!)];
    for (const f of new Set(fields)) expect(doc, f).toMatch(new RegExp('`' + f.replace('.', '\\.') + '`'));
    const blocks = [...doc.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]!);
    expect(blocks.length).toBeGreaterThan(5);
    for (const b of blocks) {
      for (const d of parseAllDocuments(b)) {
        const raw = d.toJS();
        if (!raw || typeof raw !== 'object' || !('containers' in raw)) continue;
        // An apply document says its kind; the rest is a task or a service spec.
        const { kind, ...v } = raw as Record<string, unknown>;
        if (kind === 'service') expect(() => parseServiceSpec(v, { allowHostMounts: true }), b).not.toThrow();
        else expect(() => parseTaskSpec(v, { allowHostMounts: true }), b).not.toThrow();
      }
    }
  }, 180_000);
});
