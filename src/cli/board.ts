// `flotilla board`: the live terminal dashboard. Its parts live in src/cli/board/ (data.ts:
// normalising the API's answers; text.ts and layout.ts: fitting text and tables; panes/: header,
// panels, footer, details; actions.ts: K and R on `flotilla up` processes; app.ts: the Board
// wiring blessed, timers and sockets; index.ts: the command). This file keeps the old path.
export * from './board/index.js';
