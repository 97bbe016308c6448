// What the docker driver's tasks use: one `stats` call per container per sample, with
// `stream: false` (the engine answers once, about a second later, and closes: no stream is
// left open), up to 32 at a time. CPU comes from the engine's own delta between `cpu_stats` and
// `precpu_stats` (cores = container ns / host ns × online CPUs); memory is the cgroup's usage
// minus its inactive page cache (what `docker stats` shows: `total_inactive_file` on cgroup
// v1, `inactive_file` on v2).

import type Docker from 'dockerode';
import type { TaskUsageRaw } from '../driver.js';

/** The part of a Docker stats answer read here (every field may be missing). */
export interface DockerStats {
  cpu_stats?: { cpu_usage?: { total_usage?: number; percpu_usage?: number[] }; system_cpu_usage?: number; online_cpus?: number };
  precpu_stats?: { cpu_usage?: { total_usage?: number }; system_cpu_usage?: number };
  memory_stats?: { usage?: number; stats?: Record<string, number | undefined> };
}

/** One container's measure: cores over the engine's window (null: no window yet), CPU seconds so far, bytes. */
export function containerUsage(s: DockerStats): { cores: number | null; cpuSeconds: number; memory: number } {
  const cpu = s.cpu_stats;
  const pre = s.precpu_stats;
  const total = cpu?.cpu_usage?.total_usage ?? 0;
  let cores: number | null = null;
  const sysDelta = (cpu?.system_cpu_usage ?? 0) - (pre?.system_cpu_usage ?? 0);
  if (pre?.system_cpu_usage !== undefined && pre.system_cpu_usage > 0 && sysDelta > 0) {
    const online = cpu?.online_cpus ?? cpu?.cpu_usage?.percpu_usage?.length ?? 1;
    cores = (Math.max(0, total - (pre.cpu_usage?.total_usage ?? 0)) / sysDelta) * Math.max(1, online);
  }
  const m = s.memory_stats;
  const usage = m?.usage ?? 0;
  const inactive = m?.stats?.total_inactive_file ?? m?.stats?.inactive_file ?? 0;
  const memory = inactive > 0 && inactive < usage ? usage - inactive : usage;
  return { cores, cpuSeconds: total / 1e9, memory };
}

/** Sum of a pod's containers (cores only when every container had a window). */
export function podUsage(attempt: number, containers: readonly DockerStats[]): TaskUsageRaw {
  let cores: number | null = 0;
  let cpuSeconds = 0;
  let memory = 0;
  for (const s of containers) {
    const u = containerUsage(s);
    cores = cores === null || u.cores === null ? null : cores + u.cores;
    cpuSeconds += u.cpuSeconds;
    memory += u.memory;
  }
  const r: TaskUsageRaw = { attempt, cpuSeconds, memory };
  if (cores !== null) r.cores = cores;
  return r;
}

/** Stats calls in flight at once (each mostly waits about a second for the engine's next sample). */
const CONCURRENCY = 32;
/** Longest one stats call may take (the engine answers in about a second). */
const STATS_TIMEOUT_MS = 5000;

/** Measure each task's running containers (`tasks`: task id → attempt and container ids). */
export async function dockerTasksUsage(docker: Docker, tasks: ReadonlyMap<string, { attempt: number; ids: string[] }>): Promise<Map<string, TaskUsageRaw>> {
  const jobs = [...tasks].flatMap(([taskId, t]) => t.ids.map((id) => ({ taskId, id })));
  const got = new Map<string, DockerStats[]>();
  const failed = new Set<string>();
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < jobs.length) {
      const j = jobs[next++]!;
      const abort = new AbortController();
      const timer = setTimeout(() => abort.abort(), STATS_TIMEOUT_MS);
      try {
        const s = (await docker.getContainer(j.id).stats({ stream: false, abortSignal: abort.signal } as { stream: false })) as DockerStats;
        let list = got.get(j.taskId);
        if (list === undefined) got.set(j.taskId, (list = []));
        list.push(s);
      } catch {
        failed.add(j.taskId); // gone, or the engine is slow: the task is left out this time
      } finally {
        clearTimeout(timer);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, jobs.length) }, worker));
  const out = new Map<string, TaskUsageRaw>();
  for (const [taskId, list] of got) if (!failed.has(taskId)) out.set(taskId, podUsage(tasks.get(taskId)!.attempt, list));
  return out;
}
