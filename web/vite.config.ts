// The web page: `vite build web` (from the repository root) writes web/dist, which every
// manager serves at `/`. `npx vite web` runs a dev server that proxies the API to a manager
// (FLOTILLA_DEV_MANAGER, default 127.0.0.1:7001, as started by `flotilla up`).
import { defineConfig } from 'vite';
import solid from 'vite-plugin-solid';

const manager = process.env.FLOTILLA_DEV_MANAGER ?? '127.0.0.1:7001';

export default defineConfig({
  plugins: [solid()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    // The solid transform is most of a build; rolldown's "slow plugin" note is noise here.
    rolldownOptions: { checks: { bundlerTimings: false } },
    // The page has no lazy imports (one script, one stylesheet): when the manager that served
    // it dies, the page keeps working from another manager and never needs more code from it.
  },
  server: {
    proxy: {
      '/v1': { target: `http://${manager}`, ws: true, changeOrigin: true },
    },
  },
});
