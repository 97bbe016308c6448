import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // One test file at a time (the default on 2 cores). Two at once took the suite from ~29 to
    // ~21 min, but Docker tests then share one engine: `docker exec` calls queued behind each
    // other's for many seconds and a solo-pod test hung, so the files run one after another.
    globalSetup: ['test/global-setup.ts'],
  },
});
