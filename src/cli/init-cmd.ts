// `flotilla init`: a new cluster's CA, secret and join tokens in one directory.
import { chmodSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import { action } from './util.js';

export interface InitResult {
  dir: string;
  secretFile: string;
  caCert: string;
  fingerprint: string;
  workerTokenFile: string;
  managerTokenFile: string;
  /** The admin client certificate (admin.crt; its key admin.key), both mode 0600. */
  adminCertFile: string;
  created: boolean;
}

/** Creates what is missing under `dir` (never overwrites): secret, CA, join token files. */
export async function initCluster(dir: string): Promise<InitResult> {
  const { createCa, readCa, writeCa, caFingerprint, formatJoinToken, writeSecretFile, readAdminCert, issueAdminCert, writeAdminCert } = await import('../tls/pki.js');
  const { workerToken } = await import('../manager/auth.js');
  const { managerToken } = await import('../manager/join.js');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const secretFile = join(dir, 'secret');
  let created = false;
  if (!existsSync(secretFile)) {
    writeSecretFile(secretFile, randomBytes(32).toString('base64url') + '\n');
    created = true;
  }
  chmodSync(secretFile, 0o600);
  const secret = readFileSync(secretFile, 'utf8').trim();
  let ca = readCa(dir);
  if (!ca) {
    ca = await createCa();
    writeCa(dir, ca);
    created = true;
  }
  const fp = caFingerprint(ca.cert);
  // The admin client certificate: on a TLS cluster the API is never open, and this is what
  // creates the first API token (see docs/operations.md, security).
  const adminCertFile = join(dir, 'admin.crt');
  if (!readAdminCert(dir)) {
    writeAdminCert(dir, await issueAdminCert(ca));
    created = true;
  }
  const workerTokenFile = join(dir, 'worker-token');
  const managerTokenFile = join(dir, 'manager-token');
  // Kept when present: `flotilla token rotate … --out` replaces them.
  if (!existsSync(workerTokenFile)) writeSecretFile(workerTokenFile, formatJoinToken(fp, workerToken(secret)) + '\n');
  if (!existsSync(managerTokenFile)) writeSecretFile(managerTokenFile, formatJoinToken(fp, managerToken(secret)) + '\n');
  return { dir, secretFile, caCert: join(dir, 'ca.crt'), fingerprint: fp, workerTokenFile, managerTokenFile, adminCertFile, created };
}

export function registerInit(program: Command): void {
  program
    .command('init')
    .description('create a cluster: its CA, secret and join tokens (files mode 0600) in a directory')
    .option('--dir <dir>', 'where to write them', '.flotilla')
    .addHelpText(
      'after',
      `
Creates only what is missing, so running it again changes nothing.

Examples:
  flotilla init --dir ./cluster
  flotilla manager --id m1 --listen 10.0.0.1:7001 --data ./data/m1 --ca ./cluster \\
      --bootstrap m1=10.0.0.1:7001,m2=10.0.0.2:7001,m3=10.0.0.3:7001
  flotilla worker --id w1 --managers 10.0.0.1:7001 --token-file ./cluster/worker-token`,
    )
    .action(
      action(async (flags: { dir: string }) => {
        const r = await initCluster(resolve(flags.dir));
        process.stdout.write(
          `${r.created ? 'created' : 'already initialised'}: ${r.dir}\n` +
            `  CA certificate   ${r.caCert}  (sha256 ${r.fingerprint})\n` +
            `  CA key, secret   ${join(r.dir, 'ca.key')}, ${r.secretFile}  (mode 0600: copy to managers only)\n` +
            `  join tokens      ${r.workerTokenFile}, ${r.managerTokenFile}  (mode 0600)\n` +
            `  admin client     ${r.adminCertFile}, ${join(r.dir, 'admin.key')}  (mode 0600: creates the first API token)\n` +
            `next: start managers with --ca ${r.dir}; workers join with --token-file ${r.workerTokenFile};\n` +
            `      then FLOTILLA_CA=${r.caCert} flotilla token create --role admin --out admin-token (uses the admin certificate beside the CA)\n`,
        );
      }),
    );
}
