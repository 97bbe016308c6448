// Task spec validation memoised per template. A batch of replicas (or a script submitting
// thousands of tasks) sends the same spec over and over with only the name changed; validating
// each one with the full schema was most of the cost of a submission, on the edge and again on
// every manager that applies the entry.
//
// The key is the spec's JSON text WITHOUT its `name` (plus the options that change what is
// accepted); the value is the validated spec without its name, deeply frozen and shared by
// every task made from it (an interned template: the tasks of one batch hold one copy of the
// containers, resources, restart policy, …). The name is checked on its own, with the same
// rule the schema applies. A hit gives exactly what `parseTaskSpec` gives for that input:
//  * only a valid spec is stored, and a spec's validity and normal form do not depend on its
//    name (the name is copied, never read by another rule), so the same template with another
//    valid name is valid and normalises the same way;
//  * anything else — a name that is not a string or not a DNS label, a template never seen or
//    refused — takes the full parse, so errors are worded and listed exactly as before;
//  * the options are part of the key: a template accepted with host mounts allowed is not
//    accepted from the memo where they are refused.
// Inputs must be JSON data (from JSON.parse: the API body, a decoded log entry), so that equal
// JSON text means equal input. Pure module: no IO, no clocks; bounded (oldest entry evicted).

import { parseTaskSpec, type ParseTaskSpecOptions, type TaskSpec } from './spec.js';

/** The rule the schema applies to a task name (spec.ts `dnsLabel`). */
const DNS_LABEL_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

export type SpecTemplate = Readonly<Omit<TaskSpec, 'name'>>;

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null && !Object.isFrozen(v)) {
    for (const k of Object.keys(v)) deepFreeze((v as Record<string, unknown>)[k]);
    Object.freeze(v);
  }
  return v;
}

export class SpecMemo {
  private readonly entries = new Map<string, SpecTemplate>();
  hits = 0;
  misses = 0;

  constructor(private readonly capacity = 256) {}

  get size(): number {
    return this.entries.size;
  }

  /**
   * `parseTaskSpec(input, opts)`, memoised per template. The result's nested objects are
   * shared with other tasks of the same template and frozen: never mutate a spec.
   */
  parse(input: unknown, opts: ParseTaskSpecOptions = {}): TaskSpec {
    if (typeof input !== 'object' || input === null || Array.isArray(input)) return parseTaskSpec(input, opts);
    const { name, ...rest } = input as Record<string, unknown>;
    if (typeof name !== 'string' || name.length > 63 || !DNS_LABEL_RE.test(name)) return parseTaskSpec(input, opts);
    const key = `${opts.allowHostMounts === true ? 'h' : '-'}${JSON.stringify(rest)}`;
    const hit = this.entries.get(key);
    if (hit !== undefined) {
      this.hits++;
      return { name, ...hit } as TaskSpec;
    }
    this.misses++;
    const spec = parseTaskSpec(input, opts); // throws for a bad spec: nothing is stored
    const { name: _n, ...template } = spec;
    void _n;
    deepFreeze(template);
    if (this.entries.size >= this.capacity) this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(key, template);
    return { name: spec.name, ...template } as TaskSpec;
  }
}
