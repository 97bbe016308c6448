// What each benchmark hands back to the runner (bench/run.ts adds machine, versions and date).
export interface BenchOutput {
  parameters: Record<string, unknown>;
  /** Versions of the peers measured beside flotilla. */
  peers: Record<string, string | null>;
  results: Record<string, unknown>;
  /** Set when the benchmark could not run here, with the reason. */
  skipped?: string;
}
