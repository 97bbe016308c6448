// Actions on the cluster's processes: K and R act on the node processes of a `flotilla up`
// cluster through the processes.json that `up` keeps (see up.ts).
import { splitAddr } from '../../protocol/address.js';
import { FlotillaError } from '../../protocol/errors.js';
import { pidRunsNode, readProcesses, type ProcessesFile, type ProcessRecord } from '../up.js';
import { num, obj, str, type EventLine } from './data.js';
import { line, type DetailLine } from './panes/details.js';
import { clock } from './text.js';

/** POSTs JSON to the control endpoint of `flotilla up` (127.0.0.1:port) and returns its answer. */
async function controlPost(addr: string, token: string, path: string, body: unknown): Promise<unknown> {
  const http = await import('node:http');
  const [host, port] = splitAddr(addr);
  const payload = Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host, port, path, method: 'POST', timeout: 20_000, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': payload.length } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => {
          let v: unknown = text;
          try {
            v = JSON.parse(text);
          } catch {}
          if ((res.statusCode ?? 500) >= 400) reject(new Error(str(obj(v).error) || `flotilla up answered HTTP ${res.statusCode}`));
          else resolve(v);
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`flotilla up (control ${addr}) did not answer within 20 s`)));
    req.on('error', (e) => reject(/ECONNREFUSED/.test(e.message) ? new Error(`flotilla up does not answer on ${addr}: is it still running? (R needs it; K works without)`) : e));
    req.end(payload);
  });
}


/** What the K and R actions need from the board. */
export interface ActionHost {
  flash(text: string, color?: string): void;
  /** Shows a y/N question; `run` is called on y and its answer flashed. */
  ask(prompt: string, run: () => Promise<string>): void;
  /** Runs an action now, flashing its answer (or its error) and refreshing. */
  runNow(pending: string, run: () => Promise<string>): void;
  addEvent(e: EventLine): void;
}

/** The processes file of the `flotilla up` that runs the board's cluster, or why there is none. */
export function upProcesses(dir: string, managers: readonly string[]): { file: ProcessesFile } | { error: string } {
  let file: ProcessesFile | null;
  try {
    file = readProcesses(dir);
  } catch (e) {
    return { error: errMsg(e) };
  }
  if (!file) return { error: `no ${dir}/processes.json: run the board where flotilla up runs, or set FLOTILLA_DIR` };
  const mine = new Set(managers);
  if (!file.managers.some((a) => mine.has(a))) return { error: `the flotilla up in ${dir} runs another cluster (${file.managers.join(',')})` };
  return { file };
}

/** What processes.json says about a node's process, when this cluster was started by `flotilla up`. */
export function processLines(p: { file: ProcessesFile } | { error: string }, id: string): DetailLine[] {
  if ('error' in p) return [line('K/R are only available for clusters started by `flotilla up`', 'gray-fg'), line(`(${p.error})`, 'gray-fg')];
  const rec = p.file.processes.find((r) => r.node === id);
  if (!rec) return [line(`not started by the flotilla up in ${p.file.dir}`, 'gray-fg')];
  const ok = rec.pid !== null && pidRunsNode(rec.pid, rec);
  const exit = rec.exit ? `exited (${rec.exit.signal ?? rec.exit.code}) at ${clock(rec.exit.at)}` : 'not running';
  return [
    line(`pid      ${rec.pid ?? '-'} ${rec.pid === null ? `(${exit})` : ok ? '(running)' : '(gone: that pid no longer runs this node)'}`, ok ? 'green-fg' : 'red-fg'),
    line(`started  ${clock(rec.startedAt)}${rec.starts > 1 ? ` (start ${rec.starts})` : ''}`),
    line(`command  ${rec.argv.join(' ')}`),
    line(`env      ${Object.entries(rec.env).map(([k, v]) => `${k}=${v}`).join(' ') || '-'} (on top of flotilla up's own)`),
    line(`up       pid ${p.file.up.pid}, control ${p.file.up.control}`),
  ];
}

/** The process record of the selected manager or node, or null (after saying why). */
export function upRecord(
  host: ActionHost,
  verb: 'K' | 'R',
  id: string | null,
  p: { file: ProcessesFile } | { error: string },
): { file: ProcessesFile; rec: ProcessRecord } | null {
  const what = verb === 'K' ? 'K (kill)' : 'R (restart)';
  if (!id) {
    host.flash(`${what}: select a manager or a node first (tab to the managers or nodes panel)`, 'yellow-fg');
    return null;
  }
  if ('error' in p) {
    host.flash(`${what} is only available for clusters started by \`flotilla up\` (${p.error})`, 'yellow-fg');
    return null;
  }
  const rec = p.file.processes.find((r) => r.node === id);
  if (!rec) {
    host.flash(`${id} was not started by the flotilla up in ${p.file.dir}`, 'yellow-fg');
    return null;
  }
  return { file: p.file, rec };
}

/** K: SIGKILL to the selected node's process, after a y/N question. */
export function askKill(host: ActionHost, r: { rec: ProcessRecord } | null): void {
  if (!r) return;
  const { rec } = r;
  if (rec.pid === null) return host.flash(`${rec.node} is not running${rec.exit ? ` (exited ${rec.exit.signal ?? rec.exit.code})` : ''}; R starts it again`, 'yellow-fg');
  if (!pidRunsNode(rec.pid, rec)) return host.flash(`not killing pid ${rec.pid}: it no longer runs ${rec.node}`, 'red-fg');
  const pid = rec.pid;
  host.ask(`Kill ${rec.kind} ${rec.node} (SIGKILL to pid ${pid})? [y/N]`, async () => {
    // Checked again: the process may have changed while the question was on screen.
    if (!pidRunsNode(pid, rec)) throw new Error(`not killing pid ${pid}: it no longer runs ${rec.node}`);
    process.kill(pid, 'SIGKILL');
    host.addEvent({ at: Date.now(), text: `board: killed ${rec.node} (SIGKILL to pid ${pid})`, color: 'red-fg' });
    return `killed ${rec.node} (SIGKILL to pid ${pid})`;
  });
}

/** R: asks `flotilla up` to restart the selected node's process (a question first if it runs). */
export function askRestart(host: ActionHost, r: { file: ProcessesFile; rec: ProcessRecord } | null): void {
  if (!r) return;
  const { file, rec } = r;
  const run = async () => {
    const res = await controlPost(file.up.control, file.up.token, '/v1/restart', { node: rec.node });
    const pid = num(obj(res).pid);
    host.addEvent({ at: Date.now(), text: `board: restarted ${rec.node} through flotilla up (pid ${pid ?? '?'})`, color: 'cyan-fg' });
    return `restarted ${rec.node} (pid ${pid ?? '?'})`;
  };
  if (rec.pid !== null && pidRunsNode(rec.pid, rec)) return host.ask(`Restart ${rec.kind} ${rec.node} (stop pid ${rec.pid}, then start it again)? [y/N]`, run);
  host.runNow(`restarting ${rec.node}…`, run);
}

export function errMsg(e: unknown): string {
  if (e instanceof FlotillaError) return e.message;
  if (e instanceof Error) return e.message;
  return String(e);
}
