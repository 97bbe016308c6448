// Services: every service with its ready/desired replicas, the state and progress of its
// rolling update ("batch i/n"), its template version, each task's state and health, and the
// routing mesh's endpoints of a published service (address:port, node, ready, health); a form
// to create one (name, image or command, replicas, health check, update policy); per service:
// scale, update (image, command, environment: a new template rolls out) and roll back.
// Read by polling GET /v1/services/:name (each answer carries its tasks) while the view shows.
import { createMemo, createSignal, For, onCleanup, onMount, Show, type JSX } from 'solid-js';
import { ApiError, api, write } from '../conn';
import { splitCommand } from '../format';
import { StateBadge } from '../ui';
import type { ErrorInfo } from '../types';
import type { ServiceInfo, ServiceInspect, ServiceList } from '../../../src/protocol/api';
import type { ServiceSpec } from '../../../src/protocol/service';

const POLL_MS = 1000;
const JSON_HEADERS = { 'content-type': 'application/json' };

/** "batch i/n" of an update (n from the controller's message when it says). */
export function progress(s: ServiceInfo): string {
  const u = s.update;
  if (u.state === 'none') return '-';
  const m = /batch (\d+) of (\d+)/.exec(u.message);
  if (m) return `batch ${m[1]}/${m[2]}`;
  if (u.state === 'completed' || u.state === 'rolled_back') return `batch ${u.batches}/${u.batches}`;
  return `batch ${u.batches}/${Math.max(u.batches, Math.ceil(s.replicas / Math.max(1, s.spec.update.parallelism)))}`;
}

/** The flat spec a user writes, from the service's parsed spec (what PUT takes). */
function flatSpec(spec: ServiceSpec): Record<string, unknown> {
  return {
    ...spec.template.task,
    name: spec.name,
    replicas: spec.replicas,
    update: { ...spec.update },
    ...(spec.template.health !== null ? { health: { ...spec.template.health } } : {}),
  };
}

function errorText(e: unknown): string {
  if (e instanceof ApiError) {
    const info: ErrorInfo = e.info;
    return [info.message, ...(info.details ?? []).map((d) => `'${d.path}' ${d.message}`)].join('\n');
  }
  return String(e);
}

function envLines(s: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const l of s.split('\n').map((x) => x.trim()).filter(Boolean)) {
    const i = l.indexOf('=');
    if (i < 0) env[l] = '';
    else env[l.slice(0, i).trim()] = l.slice(i + 1);
  }
  return env;
}

interface CreateValues {
  name: string;
  driver: string;
  image: string;
  command: string;
  replicas: string;
  healthType: string;
  healthCommand: string;
  healthPort: string;
  healthPath: string;
  healthInterval: string;
  healthRetries: string;
  parallelism: string;
  order: string;
  failureAction: string;
  monitor: string;
}

const NUM = /^\s*\d+\s*$/;
/** A number as typed when it is one; the text otherwise (the server names the bad field). */
const numOr = (s: string): unknown => (NUM.test(s) ? Number(s) : s.trim());

function buildCreate(v: CreateValues): { spec: Record<string, unknown> } | { error: string } {
  const cmd = splitCommand(v.command);
  if ('error' in cmd) return { error: `command: ${cmd.error}` };
  const container: Record<string, unknown> = { command: cmd.words };
  if (v.image.trim()) container.image = v.image.trim();
  const spec: Record<string, unknown> = { name: v.name.trim(), driver: v.driver, containers: [container], replicas: numOr(v.replicas || '1') };
  if (v.healthType !== 'none') {
    const h: Record<string, unknown> = { type: v.healthType };
    if (v.healthType === 'exec') h.command = v.healthCommand;
    else h.port = numOr(v.healthPort);
    if (v.healthType === 'http' && v.healthPath.trim()) h.path = v.healthPath.trim();
    if (v.healthInterval.trim()) h.intervalMs = v.healthInterval.trim();
    if (v.healthRetries.trim()) h.retries = numOr(v.healthRetries);
    spec.health = h;
  }
  const update: Record<string, unknown> = { order: v.order, failureAction: v.failureAction };
  if (v.parallelism.trim()) update.parallelism = numOr(v.parallelism);
  if (v.monitor.trim()) update.monitorMs = v.monitor.trim();
  spec.update = update;
  return { spec };
}

function CreateForm(props: { done: () => void }): JSX.Element {
  const [v, setV] = createSignal<CreateValues>({
    name: '',
    driver: 'process',
    image: '',
    command: '',
    replicas: '2',
    healthType: 'none',
    healthCommand: '',
    healthPort: '',
    healthPath: '/',
    healthInterval: '',
    healthRetries: '',
    parallelism: '1',
    order: 'stop-first',
    failureAction: 'rollback',
    monitor: '',
  });
  const [error, setError] = createSignal('');
  const [busy, setBusy] = createSignal(false);
  const set = (k: keyof CreateValues) => (e: { currentTarget: { value: string } }) => {
    const value = e.currentTarget.value;
    setV((o) => ({ ...o, [k]: value }));
  };
  async function submit(e: SubmitEvent): Promise<void> {
    e.preventDefault();
    if (busy()) return;
    const built = buildCreate(v());
    if ('error' in built) return void setError(built.error);
    setBusy(true);
    setError('');
    try {
      await write('/v1/services', { method: 'POST', headers: JSON_HEADERS, body: JSON.stringify(built.spec) });
      props.done();
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  }
  const field = (id: keyof CreateValues, label: string, input: JSX.Element, hint?: string) => (
    <div class="field" data-field={id}>
      <label for={`s-${id}`}>{label}</label>
      {input}
      <Show when={hint}>
        <p class="hint">{hint}</p>
      </Show>
    </div>
  );
  return (
    <form class="card submit-form" data-testid="service-form" onSubmit={(e) => void submit(e)} novalidate>
      <h3>New service</h3>
      <Show when={error()}>
        <div class="form-summary" role="alert" data-testid="service-form-error">
          <p class="wrap">{error()}</p>
        </div>
      </Show>
      <div class="row">
        {field('name', 'Name', <input id="s-name" autocomplete="off" placeholder="web" value={v().name} onInput={set('name')} />)}
        {field(
          'driver',
          'Driver',
          <select id="s-driver" value={v().driver} onChange={set('driver')}>
            <option value="process">process</option>
            <option value="docker">docker</option>
          </select>,
        )}
        {field('replicas', 'Replicas', <input id="s-replicas" inputmode="numeric" value={v().replicas} onInput={set('replicas')} />)}
      </div>
      {field('image', 'Image', <input id="s-image" autocomplete="off" placeholder="flotilla/busybox:test" value={v().image} onInput={set('image')} />, 'docker driver only')}
      {field('command', 'Command', <input id="s-command" class="mono" autocomplete="off" value={v().command} onInput={set('command')} />, "words split like a shell: /bin/sh -c 'exec sleep 600'")}
      <div class="row">
        {field(
          'healthType',
          'Health check',
          <select id="s-healthType" value={v().healthType} onChange={set('healthType')}>
            <option value="none">none</option>
            <option value="exec">exec</option>
            <option value="http">http</option>
            <option value="tcp">tcp</option>
          </select>,
        )}
        <Show when={v().healthType === 'exec'}>{field('healthCommand', 'Check command', <input id="s-healthCommand" class="mono" value={v().healthCommand} onInput={set('healthCommand')} />, 'a shell command; exit 0 = healthy')}</Show>
        <Show when={v().healthType === 'http' || v().healthType === 'tcp'}>{field('healthPort', 'Port', <input id="s-healthPort" inputmode="numeric" value={v().healthPort} onInput={set('healthPort')} />)}</Show>
        <Show when={v().healthType === 'http'}>{field('healthPath', 'Path', <input id="s-healthPath" value={v().healthPath} onInput={set('healthPath')} />)}</Show>
      </div>
      <Show when={v().healthType !== 'none'}>
        <div class="row">
          {field('healthInterval', 'Interval', <input id="s-healthInterval" placeholder="5s" value={v().healthInterval} onInput={set('healthInterval')} />)}
          {field('healthRetries', 'Retries', <input id="s-healthRetries" placeholder="3" inputmode="numeric" value={v().healthRetries} onInput={set('healthRetries')} />)}
        </div>
      </Show>
      <div class="row">
        {field('parallelism', 'Update parallelism', <input id="s-parallelism" inputmode="numeric" value={v().parallelism} onInput={set('parallelism')} />)}
        {field(
          'order',
          'Update order',
          <select id="s-order" value={v().order} onChange={set('order')}>
            <option value="stop-first">stop-first</option>
            <option value="start-first">start-first</option>
          </select>,
        )}
        {field(
          'failureAction',
          'On failure',
          <select id="s-failureAction" value={v().failureAction} onChange={set('failureAction')}>
            <option value="rollback">rollback</option>
            <option value="pause">pause</option>
            <option value="continue">continue</option>
          </select>,
        )}
        {field('monitor', 'Monitor', <input id="s-monitor" placeholder="5s" value={v().monitor} onInput={set('monitor')} />, 'how long a batch must stay ready')}
      </div>
      <div class="form-actions">
        <button type="submit" class="btn primary" data-testid="service-create" disabled={busy()}>
          {busy() ? 'Creating…' : 'Create service'}
        </button>
        <button type="button" class="btn" onClick={() => props.done()}>
          Cancel
        </button>
      </div>
    </form>
  );
}

function ServiceCard(props: { s: ServiceInspect; changed: () => void }): JSX.Element {
  const s = () => props.s;
  const [scaleTo, setScaleTo] = createSignal('');
  const [image, setImage] = createSignal('');
  const [command, setCommand] = createSignal('');
  const [env, setEnv] = createSignal('');
  const [editing, setEditing] = createSignal(false);
  const [msg, setMsg] = createSignal<{ text: string; error: boolean } | null>(null);
  const [busy, setBusy] = createSignal(false);
  const path = () => `/v1/services/${encodeURIComponent(s().name)}`;

  async function run(what: string, call: () => Promise<unknown>): Promise<void> {
    if (busy()) return;
    setBusy(true);
    setMsg(null);
    try {
      await call();
      setMsg({ text: what, error: false });
      props.changed();
    } catch (e) {
      setMsg({ text: errorText(e), error: true });
    } finally {
      setBusy(false);
    }
  }
  const scale = (e: SubmitEvent) => {
    e.preventDefault();
    const n = scaleTo().trim();
    void run(`scaling to ${n}`, () => write(`${path()}/scale`, { method: 'POST', headers: JSON_HEADERS, body: JSON.stringify({ replicas: NUM.test(n) ? Number(n) : n }) }));
  };
  const update = (e: SubmitEvent) => {
    e.preventDefault();
    const spec = flatSpec(s().spec) as { containers: Record<string, unknown>[] } & Record<string, unknown>;
    const c = { ...spec.containers[0]! };
    if (image().trim()) c.image = image().trim();
    if (command().trim()) {
      const cmd = splitCommand(command());
      if ('error' in cmd) return void setMsg({ text: `command: ${cmd.error}`, error: true });
      c.command = cmd.words;
      c.args = [];
    }
    if (env().trim()) c.env = { ...((c.env as Record<string, string>) ?? {}), ...envLines(env()) };
    spec.containers = [c, ...spec.containers.slice(1)];
    void run('update started', async () => {
      await write(path(), { method: 'PUT', headers: JSON_HEADERS, body: JSON.stringify(spec) });
      setEditing(false);
    });
  };
  const rollback = () => void run(`rolling back to version ${s().previousVersion}`, () => write(`${path()}/rollback`, { method: 'POST' }));
  const live = () => s().tasks.filter((t) => t.desired === 'running' || !['stopped', 'succeeded', 'failed', 'lost'].includes(t.state));

  return (
    <section class="card service" data-testid="service" data-service={s().name}>
      <div class="section-head">
        <h3 class="name-cell">{s().name}</h3>
        <span class="badge" classList={{ 'st-running': s().ready === s().replicas, 'st-pending': s().ready !== s().replicas }} data-testid="service-ready">
          {`${s().ready}/${s().replicas} ready`}
        </span>
        <span class="tag" data-testid="service-version">{`v${s().templateVersion}`}</span>
        <span class="tag" data-testid="service-update" data-state={s().update.state}>
          {s().update.state === 'none' ? 'no update yet' : s().update.state.replace('_', ' ')}
        </span>
        <span class="tag mono" data-testid="service-progress">
          {progress(s())}
        </span>
      </div>
      <Show when={s().update.message}>
        <p class="small muted wrap" data-testid="service-message">
          {s().update.message}
        </p>
      </Show>
      <div class="table-wrap">
        <table data-testid="service-tasks">
          <thead>
            <tr>
              <th>Task</th>
              <th>Version</th>
              <th>State</th>
              <th>Health</th>
              <th>Node</th>
            </tr>
          </thead>
          <tbody>
            <For each={live()}>
              {(t) => (
                <tr data-task={t.id}>
                  <td class="name-cell">
                    <a href={`/tasks/${encodeURIComponent(t.id)}`}>{t.name}</a>
                  </td>
                  <td class="mono">{`v${t.service?.version ?? '?'}${t.service?.version !== s().templateVersion ? '*' : ''}`}</td>
                  <td>
                    <StateBadge state={t.desired === 'shutdown' && t.state !== 'stopped' ? 'stopping' : t.state} />
                  </td>
                  <td data-testid="task-health" title={t.health?.output ?? ''}>
                    {t.health?.status ?? '-'}
                  </td>
                  <td>{t.node ?? '-'}</td>
                </tr>
              )}
            </For>
          </tbody>
        </table>
      </div>
      <Show when={(s().endpoints ?? []).length > 0}>
        <h4 class="small muted">Endpoints (routing mesh)</h4>
        <div class="table-wrap">
          <table data-testid="service-endpoints">
            <thead>
              <tr>
                <th>Port</th>
                <th>Endpoint</th>
                <th>Node</th>
                <th>Ready</th>
                <th>State</th>
                <th>Health</th>
                <th>Task</th>
              </tr>
            </thead>
            <tbody>
              <For each={s().endpoints ?? []}>
                {(e) => (
                  <tr data-endpoint={e.taskId} data-ready={String(e.ready)}>
                    <td class="mono">{e.published}</td>
                    <td class="mono" data-testid="endpoint-addr">
                      {e.addr}
                    </td>
                    <td data-testid="endpoint-node">{e.node ?? '-'}</td>
                    <td data-testid="endpoint-ready">
                      <span class="badge" classList={{ 'st-running': e.ready, 'st-failed': !e.ready }}>
                        {e.ready ? 'yes' : 'no'}
                      </span>
                    </td>
                    <td>{e.state ?? '-'}</td>
                    <td data-testid="endpoint-health">{e.health ?? '-'}</td>
                    <td class="name-cell">
                      <a href={`/tasks/${encodeURIComponent(e.taskId)}`}>{e.taskId}</a>
                    </td>
                  </tr>
                )}
              </For>
            </tbody>
          </table>
        </div>
      </Show>
      <div class="actions">
        <form class="filters" onSubmit={scale}>
          <label>
            <span>Replicas</span>
            <input data-testid="scale-input" inputmode="numeric" placeholder={String(s().replicas)} value={scaleTo()} onInput={(e) => setScaleTo(e.currentTarget.value)} />
          </label>
          <button type="submit" class="btn" data-testid="scale" disabled={busy()}>
            Scale
          </button>
        </form>
        <button type="button" class="btn" data-testid="edit" onClick={() => setEditing(!editing())}>
          Update…
        </button>
        <button type="button" class="btn" data-testid="rollback" disabled={busy() || s().previousVersion === null} onClick={rollback} title={s().previousVersion === null ? 'no previous version' : `back to version ${s().previousVersion}`}>
          Roll back
        </button>
      </div>
      <Show when={editing()}>
        <form class="submit-form" data-testid="update-form" onSubmit={update}>
          <p class="hint">Blank fields keep their value. A new image, command or environment rolls out batch by batch.</p>
          <div class="field">
            <label for={`u-image-${s().name}`}>Image</label>
            <input id={`u-image-${s().name}`} data-testid="update-image" placeholder={String(s().spec.template.task.containers[0]?.image ?? '')} value={image()} onInput={(e) => setImage(e.currentTarget.value)} />
          </div>
          <div class="field">
            <label for={`u-command-${s().name}`}>Command</label>
            <input id={`u-command-${s().name}`} class="mono" data-testid="update-command" value={command()} onInput={(e) => setCommand(e.currentTarget.value)} />
          </div>
          <div class="field">
            <label for={`u-env-${s().name}`}>Environment</label>
            <textarea id={`u-env-${s().name}`} class="mono" rows={2} data-testid="update-env" placeholder="KEY=value, one per line" value={env()} onInput={(e) => setEnv(e.currentTarget.value)} />
          </div>
          <div class="form-actions">
            <button type="submit" class="btn primary" data-testid="update-submit" disabled={busy()}>
              Update
            </button>
          </div>
        </form>
      </Show>
      <Show when={msg()}>
        {(m) => (
          <p class="small wrap" classList={{ 'error-text': m().error, muted: !m().error }} data-testid="service-msg" role={m().error ? 'alert' : 'status'}>
            {m().text}
          </p>
        )}
      </Show>
    </section>
  );
}

export default function Services(): JSX.Element {
  const [services, setServices] = createSignal<ServiceInspect[]>([]);
  const [loaded, setLoaded] = createSignal(false);
  const [error, setError] = createSignal('');
  const [creating, setCreating] = createSignal(false);
  // Cards keyed by name: a poll's new objects update a card, not replace it (its inputs stay).
  const names = createMemo(() => services().map((s) => s.name));
  let timer: ReturnType<typeof setTimeout> | undefined;
  let stopped = false;

  async function load(): Promise<void> {
    try {
      const list = await api<ServiceList>('/v1/services?stale=true');
      const full = await Promise.all(list.services.map((x) => api<ServiceInspect>(`/v1/services/${encodeURIComponent(x.name)}?stale=true`).catch((): ServiceInspect => ({ ...x, tasks: [], index: list.index }))));
      setServices(full);
      setError('');
    } catch (e) {
      setError(errorText(e));
    } finally {
      setLoaded(true);
    }
  }
  async function loop(): Promise<void> {
    await load();
    if (!stopped) timer = setTimeout(() => void loop(), POLL_MS);
  }
  onMount(() => void loop());
  onCleanup(() => {
    stopped = true;
    clearTimeout(timer);
  });

  return (
    <div class="page">
      <div class="section-head">
        <h2>Services</h2>
        <button type="button" class="btn primary" data-testid="new-service" onClick={() => setCreating(true)}>
          New service
        </button>
      </div>
      <Show when={creating()}>
        <CreateForm
          done={() => {
            setCreating(false);
            void load();
          }}
        />
      </Show>
      <Show when={error()}>
        <p class="error-text wrap" role="alert">
          {error()}
        </p>
      </Show>
      <Show when={loaded()} fallback={<p class="muted">loading…</p>}>
        <Show when={services().length > 0} fallback={<div class="empty">No services yet: create one here, or `flotilla service create`, or `flotilla apply -f` a kind: service file.</div>}>
          <For each={names()}>{(name) => <Show when={services().find((x) => x.name === name)}>{(s) => <ServiceCard s={s()} changed={() => void load()} />}</Show>}</For>
        </Show>
      </Show>
    </div>
  );
}
