import { createMemo, createSignal, For, Show, type JSX } from 'solid-js';
import { ApiError, api } from '../conn';
import { splitCommand } from '../format';
import { navigate } from '../router';
import { store, upsertTask } from '../store';
import type { ErrorDetail, ErrorInfo, Task } from '../types';

type Field = 'name' | 'driver' | 'image' | 'command' | 'env' | 'ports' | 'cpu' | 'memory' | 'restart' | 'maxAttempts' | 'constraints';

/** Which form field a server error path (e.g. `containers[0].image`) belongs to. */
export function fieldFor(path: string): Field | null {
  if (path === 'name') return 'name';
  if (path === 'driver') return 'driver';
  const c = /^containers\[0\]\.(\w+)/.exec(path);
  if (c) {
    const f = c[1]!;
    if (f === 'image') return 'image';
    if (f === 'command' || f === 'args') return 'command';
    if (f === 'env') return 'env';
    if (f === 'ports') return 'ports';
    return null;
  }
  if (path === 'containers') return 'command';
  if (path === 'resources.cpu' || path === 'resources') return 'cpu';
  if (path === 'resources.memory') return 'memory';
  if (path === 'restart.maxAttempts') return 'maxAttempts';
  if (path === 'restart' || path.startsWith('restart.')) return 'restart';
  if (path === 'constraints' || path.startsWith('constraints[')) return 'constraints';
  return null;
}

interface FormValues {
  name: string;
  driver: string;
  image: string;
  command: string;
  env: string;
  ports: string;
  cpu: string;
  memory: string;
  restart: string;
  maxAttempts: string;
  constraints: string;
}

function lines(s: string): string[] {
  return s
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
}

/** The spec as the API takes it; values stay as typed so the server judges them. */
function buildSpec(v: FormValues): { spec: Record<string, unknown> } | { field: Field; message: string } {
  const cmd = splitCommand(v.command);
  if ('error' in cmd) return { field: 'command', message: cmd.error };
  const env: Record<string, string> = {};
  for (const l of lines(v.env)) {
    const i = l.indexOf('=');
    if (i < 0) env[l] = '';
    else env[l.slice(0, i).trim()] = l.slice(i + 1);
  }
  const container: Record<string, unknown> = { command: cmd.words, env, ports: v.ports.split(/[\s,]+/).filter(Boolean) };
  if (v.image.trim() !== '') container.image = v.image.trim();
  const resources: Record<string, unknown> = {};
  if (v.cpu.trim() !== '') resources.cpu = v.cpu.trim();
  if (v.memory.trim() !== '') resources.memory = v.memory.trim();
  const restart: Record<string, unknown> = { policy: v.restart };
  if (v.maxAttempts.trim() !== '') {
    const n = Number(v.maxAttempts.trim());
    restart.maxAttempts = Number.isFinite(n) && /^\s*-?\d+(\.\d+)?\s*$/.test(v.maxAttempts) ? n : v.maxAttempts.trim();
  }
  return {
    spec: {
      name: v.name.trim(),
      driver: v.driver,
      containers: [container],
      resources,
      restart,
      constraints: lines(v.constraints),
    },
  };
}

export default function Submit(): JSX.Element {
  const defaultDriver = createMemo(() => {
    const drivers = new Set(Object.values(store.nodes).flatMap((n) => n.drivers));
    return drivers.has('docker') || drivers.size === 0 ? 'docker' : 'process';
  });
  const [values, setValues] = createSignal<FormValues>({
    name: '',
    driver: '',
    image: '',
    command: '',
    env: '',
    ports: '',
    cpu: '',
    memory: '',
    restart: 'on-failure',
    maxAttempts: '',
    constraints: '',
  });
  const [errors, setErrors] = createSignal<Partial<Record<Field, string>>>({});
  const [general, setGeneral] = createSignal<string[]>([]);
  const [summary, setSummary] = createSignal('');
  const [busy, setBusy] = createSignal(false);

  const v = (k: keyof FormValues) => (k === 'driver' ? values().driver || defaultDriver() : values()[k]);
  const set = (k: keyof FormValues) => (e: { currentTarget: { value: string } }) => {
    const value = e.currentTarget.value;
    setValues((old) => ({ ...old, [k]: value }));
    if (errors()[k as Field]) setErrors((old) => ({ ...old, [k]: undefined }));
  };

  function showErrors(info: ErrorInfo): void {
    const byField: Partial<Record<Field, string>> = {};
    const rest: string[] = [];
    for (const d of info.details ?? ([] as ErrorDetail[])) {
      const f = fieldFor(d.path);
      const text = `${d.path ? `'${d.path}' ` : ''}${d.message}`;
      if (f) byField[f] = byField[f] ? `${byField[f]}; ${text}` : text;
      else rest.push(text);
    }
    setErrors(byField);
    setGeneral(rest);
    setSummary(info.details && info.details.length > 0 ? `The cluster did not accept the task: ${info.details.length === 1 ? '1 problem' : `${info.details.length} problems`}.` : info.message);
    const first = Object.keys(byField)[0];
    if (first) document.getElementById(`f-${first}`)?.focus();
  }

  async function submit(e: SubmitEvent): Promise<void> {
    e.preventDefault();
    if (busy()) return;
    setErrors({});
    setGeneral([]);
    setSummary('');
    const built = buildSpec({ ...values(), driver: v('driver') });
    if ('field' in built) {
      setErrors({ [built.field]: built.message });
      setSummary('Please fix the highlighted field.');
      return;
    }
    setBusy(true);
    try {
      // The server validates first (the same checks POST /v1/tasks runs, nothing created), so
      // every problem is reported at once next to its field.
      const check = await api<{ ok: boolean; error?: ErrorInfo }>('/v1/ui/validate', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(built.spec),
      });
      if (!check.ok && check.error) {
        showErrors(check.error);
        return;
      }
      const task = await api<Task>('/v1/tasks', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(built.spec), timeoutMs: 20_000 });
      upsertTask(task);
      navigate(`/tasks/${encodeURIComponent(task.id)}`);
    } catch (err) {
      if (err instanceof ApiError) showErrors(err.info);
      else setSummary(String(err));
    } finally {
      setBusy(false);
    }
  }

  const FormField = (props: { id: Field; label: string; hint?: string; children: JSX.Element }) => (
    <div class="field" classList={{ invalid: !!errors()[props.id] }} data-field={props.id}>
      <label for={`f-${props.id}`}>{props.label}</label>
      {props.children}
      <Show when={errors()[props.id]} fallback={props.hint ? <p class="hint">{props.hint}</p> : undefined}>
        <p class="field-error" id={`error-${props.id}`} data-testid={`error-${props.id}`} role="alert">
          {errors()[props.id]}
        </p>
      </Show>
    </div>
  );
  const invalid = (id: Field) => (errors()[id] ? 'true' : undefined);
  const described = (id: Field) => (errors()[id] ? `error-${id}` : undefined);

  return (
    <div class="page narrow-page">
      <h2>New task</h2>
      <form class="card submit-form" data-testid="submit-form" onSubmit={(e) => void submit(e)} novalidate>
        <Show when={summary()}>
          <div class="form-summary" role="alert" data-testid="form-summary">
            <p>{summary()}</p>
            <Show when={general().length > 0}>
              <ul>
                <For each={general()}>{(g) => <li>{g}</li>}</For>
              </ul>
            </Show>
          </div>
        </Show>
        <div class="row">
          <FormField id="name" label="Name" hint="lowercase letters, digits and -">
            <input id="f-name" name="name" autocomplete="off" placeholder="web" value={v('name')} onInput={set('name')} aria-invalid={invalid('name')} aria-describedby={described('name')} />
          </FormField>
          <FormField id="driver" label="Driver">
            <select id="f-driver" name="driver" value={v('driver')} onChange={set('driver')} aria-invalid={invalid('driver')} aria-describedby={described('driver')}>
                <option value="docker">docker</option>
                <option value="process">process</option>
              </select>
          </FormField>
        </div>
        <FormField id="image" label="Image" hint={v('driver') === 'docker' ? 'required by the docker driver' : 'ignored by the process driver'}>
          <input id="f-image" name="image" autocomplete="off" placeholder="nginx:1.27" value={v('image')} onInput={set('image')} aria-invalid={invalid('image')} aria-describedby={described('image')} />
        </FormField>
        <FormField id="command" label="Command" hint={"words split like a shell: /bin/sh -c 'echo hi; sleep 60'"}>
          <input id="f-command" name="command" class="mono" autocomplete="off" value={v('command')} onInput={set('command')} aria-invalid={invalid('command')} aria-describedby={described('command')} />
        </FormField>
        <FormField id="env" label="Environment" hint="KEY=value, one per line">
          <textarea id="f-env" name="env" class="mono" rows={3} value={v('env')} onInput={set('env')} aria-invalid={invalid('env')} aria-describedby={described('env')} />
        </FormField>
        <FormField id="ports" label="Ports" hint="e.g. 8080:80/tcp, 9000">
          <input id="f-ports" name="ports" class="mono" autocomplete="off" value={v('ports')} onInput={set('ports')} aria-invalid={invalid('ports')} aria-describedby={described('ports')} />
        </FormField>
        <div class="row">
          <FormField id="cpu" label="CPU" hint="cores (0.5) or millicores (250m); default 100m">
            <input id="f-cpu" name="cpu" autocomplete="off" placeholder="100m" value={v('cpu')} onInput={set('cpu')} aria-invalid={invalid('cpu')} aria-describedby={described('cpu')} />
          </FormField>
          <FormField id="memory" label="Memory" hint="e.g. 128Mi, 1g; default 64Mi">
            <input id="f-memory" name="memory" autocomplete="off" placeholder="64Mi" value={v('memory')} onInput={set('memory')} aria-invalid={invalid('memory')} aria-describedby={described('memory')} />
          </FormField>
        </div>
        <div class="row">
          <FormField id="restart" label="Restart policy">
            <select id="f-restart" name="restart" value={v('restart')} onChange={set('restart')} aria-invalid={invalid('restart')} aria-describedby={described('restart')}>
                <option value="on-failure">on-failure</option>
                <option value="always">always</option>
                <option value="never">never</option>
              </select>
          </FormField>
          <FormField id="maxAttempts" label="Max restarts" hint="blank: 5 (unlimited for always)">
            <input id="f-maxAttempts" name="maxAttempts" inputmode="numeric" autocomplete="off" value={v('maxAttempts')} onInput={set('maxAttempts')} aria-invalid={invalid('maxAttempts')} aria-describedby={described('maxAttempts')} />
          </FormField>
        </div>
        <FormField id="constraints" label="Constraints" hint="key==value or key!=value on node labels (node.id==w1), one per line">
          <textarea id="f-constraints" name="constraints" class="mono" rows={2} value={v('constraints')} onInput={set('constraints')} aria-invalid={invalid('constraints')} aria-describedby={described('constraints')} />
        </FormField>
        <div class="form-actions">
          <button type="submit" class="btn primary" data-testid="submit-task" disabled={busy()}>
            {busy() ? 'Submitting…' : 'Submit task'}
          </button>
          <a class="btn" href="/tasks">
            Cancel
          </a>
        </div>
      </form>
    </div>
  );
}
