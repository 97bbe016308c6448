import { readFileSync } from 'node:fs';
import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

/** A file that uses the Docker engine (it takes the run's engine lock: test/helpers/engine-lock.ts). */
function usesEngine(file: string): boolean {
  try {
    return /\b(dockerAvailable|holdEngine)\(/.test(readFileSync(file, 'utf8'));
  } catch {
    return false;
  }
}

/**
 * Two test files run at once, but only one Docker file at a time (the engine lock). So the
 * Docker files are spread evenly through the order (in the base order, longest first) rather
 * than bunched, where the second worker would wait on the lock instead of running other files.
 */
class SpreadEngineFiles extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const engine = sorted.filter((f) => usesEngine(f.moduleId));
    const rest = sorted.filter((f) => !engine.includes(f));
    if (engine.length === 0) return sorted;
    const every = Math.max(1, Math.floor(rest.length / engine.length));
    const out: TestSpecification[] = [];
    for (let i = 0; engine.length > 0 || rest.length > 0; i++) {
      if (i % (every + 1) === 0 && engine.length > 0) out.push(engine.shift()!);
      else if (rest.length > 0) out.push(rest.shift()!);
      else out.push(engine.shift()!);
    }
    return out;
  }
}

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Two test files at once (the machine has 2 cores): the suite takes ~19 instead of ~33 min.
    // Files that use the Docker engine still run one at a time (test/helpers/engine-lock.ts):
    // beside each other their `docker exec` calls queued for seconds, and the benchmark smoke's
    // swarm init/leave changed the engine's networking under another file's containers.
    maxWorkers: 2,
    sequence: { sequencer: SpreadEngineFiles },
    globalSetup: ['test/global-setup.ts'],
  },
});
