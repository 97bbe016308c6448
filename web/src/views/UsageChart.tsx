// CPU and memory over the last minutes, for a node or a task (GET /v1/usage: what the workers
// measured, kept by the leader in memory only). One poll for the whole page, every few seconds
// while at least one chart is shown; each chart is one uPlot canvas with two series (CPU in
// cores on the left axis, memory on the right).
import { createEffect, createSignal, onCleanup, onMount, Show, type JSX } from 'solid-js';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { api } from '../conn';
import { fmtBytes, fmtCpu, fmtDateTime } from '../format';
import type { UsagePoint, UsageReport } from '../../../src/protocol/api';

const POLL_MS = 5000;
const [report, setReport] = createSignal<UsageReport | null>(null);
const [pollError, setPollError] = createSignal('');
let viewers = 0;
let timer: ReturnType<typeof setInterval> | null = null;

async function poll(): Promise<void> {
  try {
    setReport(await api<UsageReport>('/v1/usage'));
    setPollError('');
  } catch (e) {
    setPollError((e as Error).message ?? String(e));
  }
}

function watch(): () => void {
  if (viewers++ === 0) {
    void poll();
    timer = setInterval(() => void poll(), POLL_MS);
  }
  return () => {
    if (--viewers === 0 && timer !== null) {
      clearInterval(timer);
      timer = null;
    }
  };
}

function series(h: readonly UsagePoint[]): uPlot.AlignedData {
  return [h.map((p) => p.at / 1000), h.map((p) => p.cpu / 1000), h.map((p) => p.memory)];
}

export default function UsageChart(props: { node?: string; task?: string }): JSX.Element {
  let box!: HTMLDivElement;
  let plot: uPlot | null = null;
  onCleanup(watch());
  const entry = () => {
    const r = report();
    if (!r) return null;
    return props.task !== undefined ? r.tasks.find((t) => t.task === props.task) : r.nodes.find((n) => n.node === props.node);
  };
  const history = () => entry()?.history ?? [];

  onMount(() => {
    const width = () => Math.max(240, Math.floor(box.clientWidth || 320));
    const opts: uPlot.Options = {
      width: width(),
      height: 140,
      legend: { show: true, live: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, cpu: { range: (_u, _min, max) => [0, Math.max(0.1, max * 1.15)] }, mem: { range: (_u, _min, max) => [0, Math.max(1, max * 1.15)] } },
      axes: [
        {},
        { scale: 'cpu', values: (_u, vals) => vals.map((v) => fmtCpu(Math.round(v * 1000))), size: 56 },
        { scale: 'mem', side: 1, values: (_u, vals) => vals.map((v) => fmtBytes(Math.round(v))), size: 64, grid: { show: false } },
      ],
      series: [
        {},
        { label: 'CPU', scale: 'cpu', stroke: '#2563eb', width: 1.5, fill: 'rgba(37,99,235,0.08)', value: (_u, v) => (v == null ? '—' : fmtCpu(Math.round(v * 1000))) },
        { label: 'memory', scale: 'mem', stroke: '#d97706', width: 1.5, value: (_u, v) => (v == null ? '—' : fmtBytes(Math.round(v))) },
      ],
    };
    plot = new uPlot(opts, series(history()), box);
    const ro = new ResizeObserver(() => plot?.setSize({ width: width(), height: 140 }));
    ro.observe(box);
    onCleanup(() => {
      ro.disconnect();
      plot?.destroy();
      plot = null;
    });
  });
  createEffect(() => {
    const data = series(history());
    plot?.setData(data);
  });

  return (
    <section class="usage-chart" data-testid="usage-chart" data-node={props.node} data-task={props.task} data-points={history().length}>
      <div class="bar-head">
        <span>Measured use</span>
        <span class="muted small">
          <Show when={entry()} fallback={pollError() ? `not available: ${pollError()}` : 'no sample yet'}>
            {(e) => `${fmtCpu(e().cpu)} CPU, ${fmtBytes(e().memory)}`}
          </Show>
        </span>
      </div>
      <div ref={box} class="usage-plot" />
      <Show when={report()}>
        {(r) => <p class="muted small">{`since ${fmtDateTime(r().since)} (leader ${r().leader}; history starts again after a leader change)`}</p>}
      </Show>
    </section>
  );
}
