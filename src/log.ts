// Structured logs: one JSON object per line on stderr (node id, level, message, fields),
// or a compact human line when FLOTILLA_LOG_FORMAT=pretty.
export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  /** Fields added to every line from now on, read when the line is written (e.g. the Raft term). */
  setContext?(fields: () => Record<string, unknown>): void;
}

const LEVELS = { debug: 10, info: 20, warn: 30, error: 40 } as const;
export type LogLevel = keyof typeof LEVELS;

export function consoleLogger(node: string, level: LogLevel = (process.env.FLOTILLA_LOG_LEVEL as LogLevel) ?? 'info'): Logger {
  const min = LEVELS[level] ?? LEVELS.info;
  const pretty = process.env.FLOTILLA_LOG_FORMAT === 'pretty';
  let context: (() => Record<string, unknown>) | null = null;
  const write = (lvl: LogLevel, msg: string, fields?: Record<string, unknown>) => {
    if (LEVELS[lvl] < min) return;
    let ctx: Record<string, unknown> | undefined;
    try {
      ctx = context?.();
    } catch {
      ctx = undefined;
    }
    if (pretty) {
      const extra = fields && Object.keys(fields).length > 0 ? ' ' + JSON.stringify(fields) : '';
      const term = typeof ctx?.term === 'number' ? ` t${ctx.term}` : '';
      process.stderr.write(`${new Date().toISOString().slice(11, 23)} ${node}${term} ${lvl.padEnd(5)} ${msg}${extra}\n`);
    } else {
      process.stderr.write(JSON.stringify({ t: new Date().toISOString(), level: lvl, node, ...ctx, msg, ...fields }) + '\n');
    }
  };
  return {
    debug: (m, f) => write('debug', m, f),
    info: (m, f) => write('info', m, f),
    warn: (m, f) => write('warn', m, f),
    error: (m, f) => write('error', m, f),
    setContext: (fn) => {
      context = fn;
    },
  };
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };
