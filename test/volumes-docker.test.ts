// Named volumes on a real Docker engine: a volume is created with its cluster's labels, reused,
// and removed only by its own cluster; a volume of that name without the cluster's label (another
// cluster's, someone's own) is never used or removed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import type Docker from 'dockerode';
import { dockerAvailable, dockerClient } from './helpers/docker.js';
import { VOLUME_LABELS, dockerVolumeName, ensureDockerVolume, removeDockerVolume, volumeBinds } from '../src/worker/volumes.js';
import { FlotillaError } from '../src/protocol/errors.js';

const CLUSTER = `t-vol-${randomBytes(4).toString('hex')}`;
const OTHER = `t-vol-${randomBytes(4).toString('hex')}`;
let docker: Docker;
// At the top level: it waits for the run's engine lock (one Docker test file at a time).
const available = await dockerAvailable();
const made: string[] = [];

beforeAll(async () => {
  if (!available.ok && process.env.CI === 'true') throw new Error(available.reason);
  docker = dockerClient();
});

afterAll(async () => {
  // Only the volumes this test made (by their exact names).
  for (const v of made) await docker?.getVolume(v).remove().catch(() => undefined);
});

describe('docker volumes of a cluster', () => {
  it('binds: volumes by cluster-scoped (and node-scoped) name', () => {
    expect(volumeBinds('c1', [{ name: 'data', path: '/var/data', readOnly: false }, { name: 'cfg', path: '/etc/app', readOnly: true }])).toEqual([
      'flotilla-c1-data:/var/data',
      'flotilla-c1-cfg:/etc/app:ro',
    ]);
    expect(volumeBinds('c1', [{ name: 'data', path: '/var/data', readOnly: false }], 'w1')).toEqual(['flotilla-c1-w1-data:/var/data']);
    expect(dockerVolumeName('c1', 'data', 'node/with:odd chars')).toMatch(/^flotilla-c1-node_with_odd_ch_[0-9a-f]{8}-data$/);
    expect(() => volumeBinds('c1', [{ name: '../etc', path: '/x', readOnly: false }])).toThrow(FlotillaError);
  });

  it('created with the labels, reused, removed; a foreign volume of the same name is left alone', async (ctx) => {
    if (!available.ok) return ctx.skip(available.reason);
    const name = dockerVolumeName(CLUSTER, 'data');
    made.push(name);
    expect(await ensureDockerVolume(docker, CLUSTER, 'data')).toBe(name);
    const info = await docker.getVolume(name).inspect();
    expect(info.Labels).toMatchObject({ [VOLUME_LABELS.cluster]: CLUSTER, [VOLUME_LABELS.volume]: 'data' });
    expect(await ensureDockerVolume(docker, CLUSTER, 'data')).toBe(name); // again: the same one

    // A volume with the name another cluster's would have, but not its label.
    const foreign = dockerVolumeName(OTHER, 'data');
    made.push(foreign);
    await docker.createVolume({ Name: foreign, Labels: { owner: 'someone-else' } });
    await expect(ensureDockerVolume(docker, OTHER, 'data')).rejects.toThrow(/exists without this cluster's label/);
    await removeDockerVolume(docker, OTHER, 'data');
    expect((await docker.getVolume(foreign).inspect()).Labels).toEqual({ owner: 'someone-else' });

    await removeDockerVolume(docker, CLUSTER, 'data');
    await expect(docker.getVolume(name).inspect()).rejects.toMatchObject({ statusCode: 404 });
    await removeDockerVolume(docker, CLUSTER, 'data'); // absent: fine
  });
});
