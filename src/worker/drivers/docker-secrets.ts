// Secrets for the docker driver: the files a pod reads at /run/secrets/NAME, on a tmpfs that
// never touches the engine's disk nor the worker's.
//
// How (see docs/security.md, "Docker tasks"):
//   * the pod's infra container mounts an anonymous Docker volume of the `local` driver with
//     `type=tmpfs` at /run/secrets (the engine mounts a tmpfs for it while a container uses it;
//     the volume's directory on disk stays empty);
//   * once the infra runs, the worker writes the files into it through the engine's archive API
//     (`PUT /containers/<infra>/archive`, a tar built in memory here): the bytes go from the
//     worker's memory over the engine's socket into the tmpfs;
//   * the app containers take the infra's volumes read-only (`VolumesFrom: ['<infra>:ro']`), so
//     they see the same tmpfs at /run/secrets, read-only, before they start.
// When the pod ends (the infra stops) the engine unmounts the tmpfs and the values are gone;
// removing the infra (`remove({v: true})`) removes the anonymous volume. Files are mode 0444
// (root-owned) in a 0755 directory: an image may run as any user, and only this pod's
// containers see the tmpfs (Docker Swarm's default mode is the same).

import type Docker from 'dockerode';
import { validResourceName } from '../../protocol/secrets.js';
import type { DeliveredSecret } from '../../protocol/secrets.js';
import { FlotillaError } from '../../protocol/errors.js';

/** Where a docker task finds its secrets. */
export const SECRETS_PATH = '/run/secrets';

/** Mode of each secret file (and of the directory) inside the container. */
export const SECRET_FILE_MODE = 0o444;
const SECRET_DIR_MODE = 0o755;

/**
 * The infra container's mount of the pod's secrets tmpfs (`HostConfig.Mounts`): an anonymous
 * `local` volume of type tmpfs, sized to hold the values (plus room for the tar's headers).
 */
export function secretsMount(labels: Record<string, string>, secrets: readonly DeliveredSecret[]): Docker.MountSettings {
  const bytes = secrets.reduce((n, s) => n + s.data.length, 0);
  const size = Math.max(64 * 1024, Math.ceil((bytes + 4096 * (secrets.length + 1)) / 4096) * 4096);
  return {
    Type: 'volume',
    Source: '', // anonymous: removed with the infra container
    Target: SECRETS_PATH,
    ReadOnly: false,
    VolumeOptions: {
      NoCopy: true,
      Labels: labels,
      DriverConfig: { Name: 'local', Options: { type: 'tmpfs', device: 'tmpfs', o: `size=${size},mode=${SECRET_DIR_MODE.toString(8)},uid=0,gid=0` } },
    },
  };
}

function octal(n: number, width: number): string {
  return n.toString(8).padStart(width - 1, '0') + '\0';
}

/**
 * A tar archive (ustar) holding one regular file per secret, named after it, mode 0444, owner
 * 0:0. Built in memory: the caller zeroes it once sent.
 */
export function secretsTar(secrets: readonly DeliveredSecret[], mtimeSec: number): Buffer {
  const parts: Buffer[] = [];
  for (const s of secrets) {
    if (!validResourceName(s.name)) throw new FlotillaError('bad_request', `Cannot write secret ${JSON.stringify(s.name)} as it is not a valid secret name`);
    const h = Buffer.alloc(512);
    h.write(s.name, 0, 100, 'utf8');
    h.write(octal(SECRET_FILE_MODE, 8), 100, 'ascii');
    h.write(octal(0, 8), 108, 'ascii');
    h.write(octal(0, 8), 116, 'ascii');
    h.write(octal(s.data.length, 12), 124, 'ascii');
    h.write(octal(Math.max(0, Math.floor(mtimeSec)), 12), 136, 'ascii');
    h.write('        ', 148, 'ascii'); // checksum field counts as spaces
    h.write('0', 156, 'ascii'); // regular file
    h.write('ustar\0', 257, 'ascii');
    h.write('00', 263, 'ascii');
    h.write('root', 265, 'ascii');
    h.write('root', 297, 'ascii');
    let sum = 0;
    for (const b of h) sum += b;
    h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'ascii');
    parts.push(h, Buffer.from(s.data.buffer, s.data.byteOffset, s.data.length));
    const pad = (512 - (s.data.length % 512)) % 512;
    if (pad > 0) parts.push(Buffer.alloc(pad));
  }
  parts.push(Buffer.alloc(1024)); // end of archive
  return Buffer.concat(parts);
}

/**
 * Writes the secrets into the running infra container's tmpfs. The archive is zeroed afterwards
 * (the only copy the worker made of the values).
 */
export async function putSecrets(container: Docker.Container, secrets: readonly DeliveredSecret[]): Promise<void> {
  const tar = secretsTar(secrets, Date.now() / 1000);
  try {
    await container.putArchive(tar, { path: SECRETS_PATH, noOverwriteDirNonDir: true });
  } finally {
    tar.fill(0);
  }
}

/**
 * The delivered values of the secrets `names`, in order; throws (a launch failure) naming the
 * ones the worker did not get.
 */
export function secretsOf(names: readonly string[], delivered: readonly DeliveredSecret[] | undefined): DeliveredSecret[] {
  const by = new Map((delivered ?? []).map((s) => [s.name, s]));
  const missing = names.filter((n) => !by.has(n));
  if (missing.length > 0) throw new FlotillaError('bad_request', `secret${missing.length > 1 ? 's' : ''} ${missing.map((n) => `'${n}'`).join(', ')} not delivered to the driver`);
  return names.map((n) => by.get(n)!);
}
