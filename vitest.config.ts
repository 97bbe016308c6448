import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Two test files at once: most tests wait on processes, sockets and timers, not the CPU
    // (the suite took ~29 min one file at a time on 2 cores, ~20 min two at a time).
    maxWorkers: 2,
    globalSetup: ['test/global-setup.ts'],
  },
});
