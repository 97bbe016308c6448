// Small shared pieces.
import { For, Show, type JSX } from 'solid-js';
import { pct } from './format';
import type { TaskState } from './types';

export function StateBadge(props: { state: string; testid?: string }): JSX.Element {
  return (
    <span class={`badge st-${props.state}`} data-testid={props.testid} data-state={props.state}>
      {props.state}
    </span>
  );
}

export function Bar(props: { used: number; total: number; label: string; detail: string }): JSX.Element {
  const p = () => pct(props.used, props.total);
  const level = () => (p() >= 90 ? 'hot' : p() >= 70 ? 'warm' : 'ok');
  return (
    <div class="bar-row">
      <div class="bar-head">
        <span>{props.label}</span>
        <span class="muted">{props.detail}</span>
      </div>
      <div class={`bar ${level()}`} role="meter" aria-label={props.label} aria-valuemin={0} aria-valuemax={100} aria-valuenow={Math.round(p())}>
        <div class="bar-fill" style={{ width: `${p()}%` }} />
      </div>
    </div>
  );
}

export function Labels(props: { labels: Record<string, string> }): JSX.Element {
  const entries = () => Object.entries(props.labels ?? {});
  return (
    <Show when={entries().length > 0} fallback={<span class="muted">no labels</span>}>
      <span class="chips">
        <For each={entries()}>{([k, v]) => <span class="chip">{`${k}=${v}`}</span>}</For>
      </span>
    </Show>
  );
}

export function Empty(props: { children: JSX.Element }): JSX.Element {
  return <div class="empty">{props.children}</div>;
}

export const STATE_ORDER: TaskState[] = ['running', 'pending', 'assigned', 'starting', 'succeeded', 'failed', 'lost', 'stopped'];
