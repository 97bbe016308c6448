// The CLI's config file: named contexts (a cluster's managers, token file and CA file), so
// nothing needs to be exported. Lives in $FLOTILLA_CONFIG, else
// $XDG_CONFIG_HOME/flotilla/config.json, else ~/.config/flotilla/config.json.
//
//   { "current": "prod",
//     "contexts": { "prod": { "managers": ["10.0.0.1:7001"], "tokenFile": "/home/me/prod-token", "caFile": "/home/me/prod-ca.crt" } } }
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { UsageError, checkId, parseAddr } from './args.js';

export interface Context {
  managers: string[];
  tokenFile?: string;
  caFile?: string;
}

export interface ConfigFile {
  current?: string;
  contexts: Record<string, Context>;
}

export function configPath(): string {
  if (process.env.FLOTILLA_CONFIG) return process.env.FLOTILLA_CONFIG;
  const base = process.env.XDG_CONFIG_HOME || join(homedir(), '.config');
  return join(base, 'flotilla', 'config.json');
}

/** Reads the config file (an empty one when there is none); a bad file is a clear usage error. */
export function readConfig(path = configPath()): ConfigFile {
  if (!existsSync(path)) return { contexts: {} };
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new UsageError(`the config file ${path} is not valid JSON (${(e as Error).message}); fix it or remove it`);
  }
  const bad = (what: string): never => {
    throw new UsageError(`the config file ${path} is not a flotilla config: ${what}; fix it or remove it`);
  };
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) bad('it must be a JSON object');
  const o = raw as Record<string, unknown>;
  if (o.current !== undefined && typeof o.current !== 'string') bad("'current' must be a context name");
  const contexts: Record<string, Context> = {};
  const cs = o.contexts ?? {};
  if (typeof cs !== 'object' || cs === null || Array.isArray(cs)) bad("'contexts' must be an object");
  for (const [name, v] of Object.entries(cs as Record<string, unknown>)) {
    if (typeof v !== 'object' || v === null) bad(`context '${name}' must be an object`);
    const c = v as Record<string, unknown>;
    if (!Array.isArray(c.managers) || c.managers.length === 0 || !c.managers.every((m) => typeof m === 'string')) bad(`context '${name}' needs 'managers', a list of host:port`);
    for (const m of c.managers as string[]) {
      try {
        parseAddr('managers', m);
      } catch (e) {
        bad(`context '${name}': ${(e as Error).message}`);
      }
    }
    for (const f of ['tokenFile', 'caFile'] as const) if (c[f] !== undefined && typeof c[f] !== 'string') bad(`context '${name}': '${f}' must be a file path`);
    contexts[name] = { managers: c.managers as string[], ...(c.tokenFile ? { tokenFile: c.tokenFile as string } : {}), ...(c.caFile ? { caFile: c.caFile as string } : {}) };
  }
  return { ...(o.current ? { current: o.current as string } : {}), contexts };
}

export function writeConfig(cfg: ConfigFile, path = configPath()): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(cfg, null, 2) + '\n', { mode: 0o600 });
  renameSync(tmp, path);
}

export function checkContextName(name: string): string {
  return checkId('context name', name);
}

let contextFlag: string | undefined;
/** Set from the global --context flag (main.ts). */
export function setContextFlag(name: string | undefined): void {
  contextFlag = name;
}

/** The context named by --context or FLOTILLA_CONTEXT (an unknown name is an error), else undefined. */
export function explicitContext(): { name: string; ctx: Context } | undefined {
  const name = contextFlag ?? (process.env.FLOTILLA_CONTEXT || undefined);
  if (name === undefined) return undefined;
  const cfg = readConfig();
  const ctx = cfg.contexts[name];
  if (!ctx) throw new UsageError(`no context '${name}' (${contextFlag ? '--context' : 'FLOTILLA_CONTEXT'}) in ${configPath()}; \`flotilla context ls\` lists them`);
  return { name, ctx };
}

/** The current context (`flotilla context use`), if one is set; a dangling name is an error. */
export function currentContext(): { name: string; ctx: Context } | undefined {
  const cfg = readConfig();
  if (!cfg.current) return undefined;
  const ctx = cfg.contexts[cfg.current];
  if (!ctx) throw new UsageError(`the current context '${cfg.current}' in ${configPath()} does not exist; run \`flotilla context use NAME\``);
  return { name: cfg.current, ctx };
}
