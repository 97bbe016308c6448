// Helpers shared by CLI commands: flag parsing with clear usage errors, exit codes, output.
import type { Command } from 'commander';
import { readFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { FlotillaClient } from '../client/client.js';
import { FlotillaError } from '../protocol/errors.js';
import { UsageError, parseAddr, checkId } from './args.js';
import { currentContext, explicitContext, type Context } from './config.js';

export { UsageError, parseAddr, checkId } from './args.js';

/** Parses `m1=127.0.0.1:7001,m2=127.0.0.1:7002`. */
export function parseMembers(flag: string, v: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of v.split(',').map((s) => s.trim()).filter(Boolean)) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new UsageError(`${flag} expects id=host:port pairs separated by commas, got '${part}'`);
    const id = part.slice(0, eq);
    checkId(flag, id);
    if (out[id]) throw new UsageError(`${flag} names '${id}' twice`);
    out[id] = parseAddr(flag, part.slice(eq + 1));
  }
  if (Object.keys(out).length === 0) throw new UsageError(`${flag} is empty`);
  return out;
}

export function parseIntFlag(flag: string, v: string, min: number, max: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`${flag} must be an integer from ${min} to ${max}, got '${v}'`);
  return n;
}

/** Reads the cluster secret: --secret-file, else FLOTILLA_SECRET. */
export function readSecret(file: string | undefined): string {
  let secret: string | undefined;
  if (file) {
    try {
      secret = readFileSync(file, 'utf8').trim();
    } catch (e) {
      throw new UsageError(`cannot read the secret file ${file}: ${(e as Error).message}`);
    }
  } else secret = process.env.FLOTILLA_SECRET;
  if (!secret) throw new UsageError('no cluster secret: pass --secret-file FILE or set FLOTILLA_SECRET');
  if (secret.length < 16) throw new UsageError('the cluster secret must be at least 16 characters');
  return secret;
}

/** The directory of the local cluster `flotilla up` keeps (FLOTILLA_DIR, else .flotilla). */
export function upDir(): string {
  return process.env.FLOTILLA_DIR || '.flotilla';
}

let globalManagersFlag: string | undefined;
/** Set from the global --managers flag (main.ts), so token and CA follow where the managers come from. */
export function setManagersFlag(v: string | undefined): void {
  globalManagersFlag = v;
}

/**
 * The context (from the config file) the CLI uses, if any. None when --managers or
 * FLOTILLA_MANAGERS name the cluster; else the one --context or FLOTILLA_CONTEXT names; else,
 * unless a cluster `flotilla up` wrote here (<FLOTILLA_DIR or .flotilla>/cluster.json) decides,
 * the current one (`flotilla context use`).
 */
export function contextInUse(managersFlag?: string): { name: string; ctx: Context } | undefined {
  if (managersFlag ?? globalManagersFlag ?? process.env.FLOTILLA_MANAGERS) return undefined;
  const explicit = explicitContext();
  if (explicit) return explicit;
  if (existsSync(join(upDir(), 'cluster.json'))) return undefined;
  return currentContext();
}

/**
 * Where the CLI finds the cluster: --managers, FLOTILLA_MANAGERS, the context --context or
 * FLOTILLA_CONTEXT names, what `flotilla up` wrote (<FLOTILLA_DIR or .flotilla>/cluster.json),
 * else the current context.
 */
export function managersFrom(flag: string | undefined): string[] {
  const v = flag ?? process.env.FLOTILLA_MANAGERS;
  if (v) return v.split(',').map((s) => parseAddr('--managers', s.trim().replace(/^https?:\/\//, '')));
  const ctx = contextInUse(flag);
  if (ctx) return ctx.ctx.managers;
  const cfg = join(upDir(), 'cluster.json');
  if (existsSync(cfg)) {
    const c = JSON.parse(readFileSync(cfg, 'utf8')) as { managers: string[] };
    return c.managers;
  }
  throw new UsageError('no cluster given: pass --managers host:port,… or set FLOTILLA_MANAGERS, or pick a context (`flotilla context set NAME --managers …`, then `flotilla context use NAME`), or run `flotilla up` here');
}

/**
 * The API token the CLI sends: --token-file FILE, else FLOTILLA_TOKEN, else FLOTILLA_TOKEN_FILE,
 * else the token file of the context in use, else the admin token `flotilla up` wrote
 * (<FLOTILLA_DIR or .flotilla>/admin-token), if any.
 */
export function tokenFrom(file?: string): string | undefined {
  const read = (f: string, what: string): string => {
    let t: string;
    try {
      t = readFileSync(f, 'utf8').trim();
    } catch (e) {
      throw new UsageError(`cannot read the token file ${f} (${what}): ${(e as Error).message}`);
    }
    if (!t) throw new UsageError(`the token file ${f} (${what}) is empty`);
    return t;
  };
  file ??= globalTokenFile;
  if (file) return read(file, '--token-file');
  if (process.env.FLOTILLA_TOKEN) return process.env.FLOTILLA_TOKEN.trim();
  if (process.env.FLOTILLA_TOKEN_FILE) return read(process.env.FLOTILLA_TOKEN_FILE, 'FLOTILLA_TOKEN_FILE');
  const ctx = contextInUse();
  if (ctx) return ctx.ctx.tokenFile ? read(ctx.ctx.tokenFile, `context ${ctx.name}`) : undefined;
  const dflt = join(upDir(), 'admin-token');
  if (existsSync(dflt)) return read(dflt, 'written by flotilla up');
  return undefined;
}

let globalTokenFile: string | undefined;
/** Set from the global --token-file flag (main.ts). */
export function setTokenFile(file: string | undefined): void {
  globalTokenFile = file;
}

let globalCaFile: string | undefined;
/** Set from the global --ca-file flag (main.ts). */
export function setCaFile(file: string | undefined): void {
  globalCaFile = file;
}

/**
 * The cluster CA the CLI trusts (PEM), which also switches it to HTTPS: --ca-file, else
 * FLOTILLA_CA (a file), else the CA file of the context in use, else the CA `flotilla up`/`init` recorded in <FLOTILLA_DIR>/cluster.json
 * when the managers come from there. Undefined: plain HTTP (a cluster started with --insecure).
 */
export function caFrom(managersFlag?: string): string | undefined {
  const f = caFileFrom(managersFlag);
  return f ? readCaFile(f.path, f.what) : undefined;
}

function readCaFile(f: string, what: string): string {
  try {
    return readFileSync(f, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read the CA certificate ${f} (${what}): ${(e as Error).message}`);
  }
}

/** Where caFrom reads the CA from (and what named it), or undefined: plain HTTP. */
function caFileFrom(managersFlag?: string): { path: string; what: string } | undefined {
  if (globalCaFile) return { path: globalCaFile, what: '--ca-file' };
  if (process.env.FLOTILLA_CA) return { path: process.env.FLOTILLA_CA, what: 'FLOTILLA_CA' };
  if (managersFlag || process.env.FLOTILLA_MANAGERS) return undefined;
  const ctx = contextInUse(managersFlag);
  if (ctx) return ctx.ctx.caFile ? { path: ctx.ctx.caFile, what: `context ${ctx.name}` } : undefined;
  const dir = upDir();
  const cfg = join(dir, 'cluster.json');
  if (existsSync(cfg)) {
    const c = JSON.parse(readFileSync(cfg, 'utf8')) as { ca?: string | null };
    if (c.ca) return { path: c.ca.startsWith('/') ? c.ca : join(dir, c.ca), what: `recorded in ${cfg}` };
  }
  return undefined;
}

/**
 * The cluster's admin client certificate (admin.crt + admin.key, written by `flotilla init` and
 * `flotilla up` beside the CA certificate), when the CA comes from a directory that holds it and
 * this user may read it. On a TLS cluster it is an admin credential: it creates the first token.
 */
export function adminCertFrom(managersFlag?: string): { cert: string; key: string } | undefined {
  const f = caFileFrom(managersFlag);
  if (!f) return undefined;
  const dir = dirname(f.path);
  try {
    return { cert: readFileSync(join(dir, 'admin.crt'), 'utf8'), key: readFileSync(join(dir, 'admin.key'), 'utf8') };
  } catch {
    return undefined;
  }
}

export function clientFor(flag: string | undefined, opts: { timeoutMs?: number } = {}): FlotillaClient {
  const token = tokenFrom();
  // Without a token: the admin client certificate beside the CA, if this user can read it
  // (how the first token of a TLS cluster is created; a token, when given, decides instead).
  const admin = token === undefined ? adminCertFrom(flag) : undefined;
  return new FlotillaClient(managersFrom(flag), {
    timeoutMs: opts.timeoutMs,
    token,
    ca: caFrom(flag),
    ...(admin ?? {}),
    onWait: (reason) => {
      if (process.stderr.isTTY) process.stderr.write(`… waiting for the cluster (${reason})\n`);
    },
  });
}

/** Runs a command action, mapping errors to messages and exit codes. */
export function action<A extends unknown[]>(fn: (...args: A) => Promise<void> | void) {
  return async (...args: A): Promise<void> => {
    try {
      await fn(...args);
    } catch (e) {
      if (e instanceof UsageError) {
        process.stderr.write(`error: ${e.message}\n`);
        process.exitCode = 2;
      } else if (e instanceof FlotillaError) {
        process.stderr.write(`error: ${e.message}\n`);
        for (const d of e.details ?? []) process.stderr.write(`  ${d.path}: ${d.message}\n`);
        process.exitCode = e.code === 'bad_request' ? 2 : 1;
      } else {
        process.stderr.write(`error: ${(e as Error).message ?? String(e)}\n`);
        process.exitCode = 1;
      }
    }
  };
}

export function table(rows: string[][], header: string[]): string {
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return all.map((r) => r.map((c, i) => (i === r.length - 1 ? c : (c ?? '').padEnd(widths[i]!))).join('  ')).join('\n') + '\n';
}

export function ago(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '-';
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)}s`;
  const m = s / 60;
  if (m < 60) return `${Math.floor(m)}m`;
  const h = m / 60;
  if (h < 48) return `${Math.floor(h)}h`;
  return `${Math.floor(h / 24)}d`;
}

export type OutputFormat = 'table' | 'wide' | 'json' | 'yaml';

/** The `-o` value, one of `allowed` (default `table`); anything else is a usage error. */
export function outputFormat<F extends OutputFormat>(o: string | undefined, allowed: readonly F[]): F {
  const f = (o ?? 'table') as F;
  if (!allowed.includes(f)) throw new UsageError(`-o must be one of ${allowed.join(', ')}, got '${o}'`);
  return f;
}

/** Commander collector for repeatable flags. */
export function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

/** A client of the managers the command's global flags (or env, or context) name. */
export function commandClient(cmd: Command): FlotillaClient {
  return clientFor(cmd.optsWithGlobals().managers);
}

