// Cluster ids (`e<epoch>-<random>`, see ops.ts): read by the metrics and the operations alike.

/** The epoch of a cluster id (`e<epoch>-<random>`); a cluster without an id is epoch 0. */
export function clusterEpoch(id: string | null | undefined): number {
  const m = id ? /^e(\d+)-[0-9a-f]+$/.exec(id) : null;
  return m ? Number(m[1]) : 0;
}
