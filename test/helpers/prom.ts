// A strict parser for the Prometheus text exposition format (version 0.0.4), for tests of
// /metrics. It throws on anything a Prometheus server would reject or that breaks the format's
// rules: bad metric or label names, bad label syntax or escapes, non-numeric values, samples
// without a `# TYPE`, a family split in two, duplicate series, histograms whose buckets are not
// cumulative or do not end in le="+Inf" equal to _count.

export type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';

export interface Sample {
  /** The sample's own name (e.g. `x_bucket` of the histogram family `x`). */
  name: string;
  labels: Record<string, string>;
  value: number;
  line: number;
}

export interface Family {
  name: string;
  type: MetricType;
  help?: string;
  samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES: readonly MetricType[] = ['counter', 'gauge', 'histogram', 'summary', 'untyped'];
const FLOAT = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;

export class ExpositionError extends Error {}

/** Parses a value: a decimal float, NaN, +Inf or -Inf (Go's ParseFloat spellings Prometheus accepts). */
export function parseValue(s: string): number {
  if (s === 'NaN') return NaN;
  if (s === '+Inf' || s === 'Inf') return Infinity;
  if (s === '-Inf') return -Infinity;
  if (!FLOAT.test(s)) throw new ExpositionError(`not a number: '${s}'`);
  return Number(s);
}

/** Which family a sample name belongs to, given the declared families. */
function familyOf(name: string, families: Map<string, Family>): Family | undefined {
  const exact = families.get(name);
  if (exact) return exact;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (!name.endsWith(suffix)) continue;
    const f = families.get(name.slice(0, -suffix.length));
    if (f && (f.type === 'histogram' || (f.type === 'summary' && suffix !== '_bucket'))) return f;
  }
  return undefined;
}

/** Parses `{a="x",b="y"}` starting at `s[i] === '{'`; returns the labels and the index after `}`. */
function parseLabels(s: string, i: number, where: string): [Record<string, string>, number] {
  const labels: Record<string, string> = {};
  i++; // '{'
  for (;;) {
    if (s[i] === '}') return [labels, i + 1];
    const m = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(s.slice(i));
    if (!m) throw new ExpositionError(`${where}: bad label name at '${s.slice(i, i + 20)}'`);
    const lname = m[0];
    if (!LABEL_NAME.test(lname) || lname.startsWith('__')) throw new ExpositionError(`${where}: reserved or bad label name '${lname}'`);
    if (lname in labels) throw new ExpositionError(`${where}: label '${lname}' given twice`);
    i += lname.length;
    if (s[i] !== '=' || s[i + 1] !== '"') throw new ExpositionError(`${where}: expected =" after label '${lname}'`);
    i += 2;
    let v = '';
    for (;;) {
      const c = s[i];
      if (c === undefined) throw new ExpositionError(`${where}: unterminated value of label '${lname}'`);
      if (c === '"') break;
      if (c === '\\') {
        const e = s[i + 1];
        if (e === '\\') v += '\\';
        else if (e === '"') v += '"';
        else if (e === 'n') v += '\n';
        else throw new ExpositionError(`${where}: bad escape \\${e ?? ''} in label '${lname}'`);
        i += 2;
        continue;
      }
      v += c;
      i++;
    }
    labels[lname] = v;
    i++; // closing quote
    if (s[i] === ',') i++;
    else if (s[i] !== '}') throw new ExpositionError(`${where}: expected , or } after label '${lname}'`);
  }
}

/** Parses a whole exposition; throws an ExpositionError naming the line on the first problem. */
export function parseExposition(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const closed = new Set<string>(); // families whose samples ended (another family's came after)
  const seen = new Set<string>(); // name + labels of every series
  const typed = new Set<string>(); // families with a # TYPE line
  let current: Family | null = null;
  const lines = text.split('\n');
  if (lines[lines.length - 1] !== '') throw new ExpositionError('the exposition does not end with a newline');
  lines.pop();
  lines.forEach((raw, n) => {
    const where = `line ${n + 1} '${raw.slice(0, 120)}'`;
    if (raw.trim() === '') return;
    if (raw.startsWith('#')) {
      const m = /^#\s+(HELP|TYPE)\s+(\S+)(?:\s(.*))?$/.exec(raw);
      if (!m) return; // a plain comment
      const [, kind, name, rest = ''] = m;
      if (!METRIC_NAME.test(name!)) throw new ExpositionError(`${where}: bad metric name '${name}'`);
      if (kind === 'TYPE') {
        const type = rest.trim() as MetricType;
        if (!TYPES.includes(type)) throw new ExpositionError(`${where}: unknown type '${rest}'`);
        if (typed.has(name!)) throw new ExpositionError(`${where}: second # TYPE for ${name}`);
        const f = families.get(name!);
        if (f) f.type = type;
        else families.set(name!, { name: name!, type, samples: [] });
        typed.add(name!);
      } else {
        const f = families.get(name!) ?? ({ name: name!, type: 'untyped', samples: [] } as Family);
        if (f.help !== undefined) throw new ExpositionError(`${where}: second # HELP for ${name}`);
        f.help = rest.replace(/\\([\s\S]?)/g, (_, c: string) => {
          if (c === 'n') return '\n';
          if (c === '\\') return '\\';
          throw new ExpositionError(`${where}: bad escape \\${c} in HELP`);
        });
        families.set(name!, f);
      }
      return;
    }
    const nm = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(raw);
    if (!nm) throw new ExpositionError(`${where}: bad metric name`);
    const name = nm[0];
    let i = name.length;
    let labels: Record<string, string> = {};
    if (raw[i] === '{') [labels, i] = parseLabels(raw, i, where);
    if (raw[i] !== ' ') throw new ExpositionError(`${where}: expected a space before the value`);
    const parts = raw.slice(i + 1).split(' ');
    if (parts.length < 1 || parts.length > 2 || parts.some((p) => p === '')) throw new ExpositionError(`${where}: expected 'value [timestamp]'`);
    let value: number;
    try {
      value = parseValue(parts[0]!);
    } catch (e) {
      throw new ExpositionError(`${where}: ${(e as Error).message}`);
    }
    if (parts[1] !== undefined && !/^-?\d+$/.test(parts[1])) throw new ExpositionError(`${where}: bad timestamp '${parts[1]}'`);
    const fam = familyOf(name, families);
    if (!fam || !typed.has(fam.name)) throw new ExpositionError(`${where}: sample of ${name} without a # TYPE line`);
    if ((fam.type === 'counter' || fam.type === 'gauge' || fam.type === 'untyped') && name !== fam.name) {
      throw new ExpositionError(`${where}: ${name} in ${fam.type} family ${fam.name}`);
    }
    if (fam.type === 'histogram' && name === fam.name) throw new ExpositionError(`${where}: histogram sample without _bucket/_sum/_count`);
    if (fam.type === 'histogram' && name.endsWith('_bucket') && labels.le === undefined) throw new ExpositionError(`${where}: bucket without le`);
    if (fam.type === 'histogram' && !name.endsWith('_bucket') && labels.le !== undefined) throw new ExpositionError(`${where}: le label outside a bucket`);
    if (fam.type === 'summary' && name === fam.name && labels.quantile === undefined) throw new ExpositionError(`${where}: summary sample without quantile`);
    if (fam.type === 'counter' && !(value >= 0)) throw new ExpositionError(`${where}: a counter must be a non-negative number`);
    if (current !== fam) {
      if (closed.has(fam.name)) throw new ExpositionError(`${where}: samples of ${fam.name} are not contiguous`);
      if (current) closed.add(current.name);
      current = fam;
    }
    const key = `${name}{${Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(',')}}`;
    if (seen.has(key)) throw new ExpositionError(`${where}: duplicate series ${key}`);
    seen.add(key);
    fam.samples.push({ name, labels, value, line: n + 1 });
  });
  for (const f of families.values()) if (f.type === 'histogram') checkHistogram(f);
  return families;
}

function checkHistogram(f: Family): void {
  const series = new Map<string, { buckets: [number, number][]; sum?: number; count?: number }>();
  for (const s of f.samples) {
    const { le, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort(([a], [b]) => (a < b ? -1 : 1)));
    const e = series.get(key) ?? { buckets: [] };
    series.set(key, e);
    if (s.name === `${f.name}_bucket`) e.buckets.push([parseValue(le!), s.value]);
    else if (s.name === `${f.name}_sum`) e.sum = s.value;
    else e.count = s.value;
  }
  for (const [key, e] of series) {
    const what = `histogram ${f.name} ${key}`;
    if (e.sum === undefined || e.count === undefined) throw new ExpositionError(`${what}: no _sum or _count`);
    if (e.buckets.length === 0) throw new ExpositionError(`${what}: no buckets`);
    for (let i = 1; i < e.buckets.length; i++) {
      if (!(e.buckets[i]![0] > e.buckets[i - 1]![0])) throw new ExpositionError(`${what}: bucket bounds not increasing`);
      if (e.buckets[i]![1] < e.buckets[i - 1]![1]) throw new ExpositionError(`${what}: buckets not cumulative`);
    }
    const last = e.buckets[e.buckets.length - 1]!;
    if (last[0] !== Infinity) throw new ExpositionError(`${what}: no le="+Inf" bucket`);
    if (last[1] !== e.count) throw new ExpositionError(`${what}: +Inf bucket ${last[1]} != _count ${e.count}`);
  }
}

/** The value of one sample (labels must match the given ones; others may be present). */
export function sampleValue(fams: Map<string, Family>, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const f of fams.values()) {
    for (const s of f.samples) {
      if (s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)) return s.value;
    }
  }
  return undefined;
}
