// Docker images: pulling one (with progress aggregated over its layers, for the task's
// detail "pulling <image> 43%"), or plainly (the lock container's image).

import type { Readable } from 'node:stream';
import type Docker from 'dockerode';
import type { Logger } from '../../log.js';
import { errMessage } from './docker-names.js';

/** Aggregates a pull's progress events (per layer) into one percentage. */
export class PullProgress {
  private readonly layers = new Map<string, { current: number; total: number; done: boolean }>();

  /** Feed one event of the pull stream; returns the percentage (0-100) when known. */
  update(evt: { id?: string; status?: string; progressDetail?: { current?: number; total?: number } }): number | undefined {
    const id = evt.id;
    if (id !== undefined && evt.status !== undefined) {
      const l = this.layers.get(id) ?? { current: 0, total: 0, done: false };
      const pd = evt.progressDetail;
      if (/^Downloading/i.test(evt.status) && pd !== undefined && typeof pd.total === 'number' && pd.total > 0) {
        l.total = pd.total;
        l.current = Math.min(pd.current ?? 0, pd.total);
      } else if (/^(Download complete|Verifying Checksum|Extracting|Pull complete|Already exists)/i.test(evt.status)) {
        l.done = true;
        if (l.total > 0) l.current = l.total;
      }
      this.layers.set(id, l);
    }
    return this.percent();
  }

  percent(): number | undefined {
    let cur = 0;
    let tot = 0;
    let any = false;
    for (const l of this.layers.values()) {
      if (l.total > 0) {
        cur += l.current;
        tot += l.total;
        any = true;
      }
    }
    if (!any) return undefined;
    return Math.min(100, Math.floor((cur / tot) * 100));
  }
}

/**
 * Pull `image`, reporting the percentage as it changes. Resolves with what went wrong, if
 * anything (the caller checks whether the image is there): an error of the pull stream,
 * "aborted" when `abort` fired, "timed out after …" after `timeoutMs`.
 */
export async function pullImage(
  docker: Docker,
  image: string,
  opts: { abort: AbortSignal; timeoutMs: number; onPercent: (pct: number | undefined) => void },
): Promise<string | undefined> {
  const signal = AbortSignal.any([opts.abort, AbortSignal.timeout(opts.timeoutMs)]);
  let problem: string | undefined;
  try {
    const stream = (await docker.pull(image, { abortSignal: signal })) as Readable;
    const progress = new PullProgress();
    problem = await new Promise<string | undefined>((res) => {
      const onAbort = (): void => {
        stream.destroy();
        res(opts.abort.aborted ? 'aborted' : `timed out after ${opts.timeoutMs} ms`);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      let firstError: string | undefined;
      docker.modem.followProgress(
        stream,
        (err: unknown) => {
          signal.removeEventListener('abort', onAbort);
          res(err != null ? errMessage(err) : firstError);
        },
        (evt: { error?: string; errorDetail?: { message?: string }; id?: string; status?: string; progressDetail?: { current?: number; total?: number } }) => {
          if (evt.error !== undefined || evt.errorDetail !== undefined) {
            firstError ??= evt.errorDetail?.message ?? evt.error;
            return;
          }
          opts.onPercent(progress.update(evt));
        },
      );
    });
  } catch (e) {
    problem = signal.aborted && !opts.abort.aborted ? `timed out after ${opts.timeoutMs} ms` : errMessage(e);
  }
  return problem;
}

/** Pull an image (no progress), for the lock container. Failures are logged only. */
export async function pullPlain(docker: Docker, image: string, timeoutMs: number, log: Logger): Promise<void> {
  try {
    const stream = (await docker.pull(image, { abortSignal: AbortSignal.timeout(timeoutMs) })) as Readable;
    await new Promise<void>((res) => docker.modem.followProgress(stream, () => res()));
  } catch (e) {
    log.warn('docker driver: cannot pull the infra image', { image, error: errMessage(e) });
  }
}
