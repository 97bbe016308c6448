// The DNS wire format (RFC 1035 §4), the small part a worker's name server needs: decode one
// query (header + one question), encode its answer (A records, or none, with an rcode).
//
// A query is judged before anything is answered:
//   - shorter than a header, longer than MAX_QUERY_BYTES, or a response (QR set): dropped, no
//     answer (a response is never answered: two servers cannot bounce packets at each other);
//   - an opcode other than QUERY: NOTIMP;
//   - not exactly one question, answer/authority records present, a compressed or overlong
//     name, a label over 63 bytes, a question cut short: FORMERR;
//   - a class other than IN (or ANY): REFUSED.
// Additional records (an EDNS OPT) are allowed and ignored; the answer carries none, which a
// resolver reads as "no EDNS" and keeps to 512-byte answers. An answer never exceeds
// MAX_ANSWER_BYTES: the A records that do not fit are left out (never a TC bit — this server
// speaks UDP only — so a client never retries over TCP for records it would not need).

export const DNS_CLASS_IN = 1;
export const DNS_CLASS_ANY = 255;
export const DNS_TYPE_A = 1;
export const DNS_TYPE_AAAA = 28;
export const DNS_TYPE_ANY = 255;

export const RCODE_NOERROR = 0;
export const RCODE_FORMERR = 1;
export const RCODE_SERVFAIL = 2;
export const RCODE_NXDOMAIN = 3;
export const RCODE_NOTIMP = 4;
export const RCODE_REFUSED = 5;

/** Largest query read (a question is at most 12 + 255 + 4 bytes; the rest is an OPT record). */
export const MAX_QUERY_BYTES = 1232;
/** Largest answer sent (plain DNS over UDP). */
export const MAX_ANSWER_BYTES = 512;

export interface DnsQuestion {
  /** The name, lowercase (ASCII), without the trailing dot ('' for the root). */
  name: string;
  /** The name's bytes as asked (echoed back in the answer). */
  wire: Uint8Array;
  type: number;
  class: number;
}

export type DecodedQuery =
  | { ok: true; id: number; rd: boolean; question: DnsQuestion }
  /** Refused with `rcode`; `question` when it could be read (echoed back). */
  | { ok: false; id: number; rd: boolean; rcode: number; reason: string; question?: DnsQuestion }
  /** No answer at all. */
  | { ok: false; drop: true; reason: string };

/** Decode one query datagram. Never throws. */
export function decodeQuery(buf: Uint8Array): DecodedQuery {
  if (buf.length < 12) return { ok: false, drop: true, reason: 'shorter than a DNS header' };
  if (buf.length > MAX_QUERY_BYTES) return { ok: false, drop: true, reason: `longer than ${MAX_QUERY_BYTES} bytes` };
  const id = (buf[0]! << 8) | buf[1]!;
  const flags = (buf[2]! << 8) | buf[3]!;
  if (flags & 0x8000) return { ok: false, drop: true, reason: 'a response, not a query' };
  const rd = (flags & 0x0100) !== 0;
  const opcode = (flags >> 11) & 0xf;
  const refuse = (rcode: number, reason: string, question?: DnsQuestion): DecodedQuery => ({ ok: false, id, rd, rcode, reason, ...(question ? { question } : {}) });
  if (opcode !== 0) return refuse(RCODE_NOTIMP, `opcode ${opcode} is not QUERY`);
  const qd = (buf[4]! << 8) | buf[5]!;
  const an = (buf[6]! << 8) | buf[7]!;
  const ns = (buf[8]! << 8) | buf[9]!;
  if (qd !== 1) return refuse(RCODE_FORMERR, `${qd} questions (exactly 1 is answered)`);
  if (an !== 0 || ns !== 0) return refuse(RCODE_FORMERR, 'a query with answer or authority records');
  let off = 12;
  const labels: string[] = [];
  let total = 0;
  for (;;) {
    if (off >= buf.length) return refuse(RCODE_FORMERR, 'the question name is cut short');
    const len = buf[off]!;
    if (len === 0) {
      off++;
      break;
    }
    if ((len & 0xc0) !== 0) return refuse(RCODE_FORMERR, 'a compressed or extended label in the question');
    if (off + 1 + len > buf.length) return refuse(RCODE_FORMERR, 'a label runs past the end of the packet');
    total += len + 1;
    if (total > 254) return refuse(RCODE_FORMERR, 'the name is longer than 255 bytes');
    let label = '';
    for (let i = off + 1; i <= off + len; i++) {
      const c = buf[i]!;
      label += String.fromCharCode(c >= 0x41 && c <= 0x5a ? c + 32 : c);
    }
    labels.push(label);
    off += 1 + len;
  }
  if (off + 4 > buf.length) return refuse(RCODE_FORMERR, 'the question type/class is cut short');
  const question: DnsQuestion = {
    name: labels.join('.'),
    wire: buf.slice(12, off),
    type: (buf[off]! << 8) | buf[off + 1]!,
    class: (buf[off + 2]! << 8) | buf[off + 3]!,
  };
  if (question.class !== DNS_CLASS_IN && question.class !== DNS_CLASS_ANY) return refuse(RCODE_REFUSED, `class ${question.class} (only IN is served)`, question);
  return { ok: true, id, rd, question };
}

export interface DnsAnswer {
  id: number;
  rd: boolean;
  rcode: number;
  /** Authoritative (a name of the cluster's zone). */
  aa?: boolean;
  question?: DnsQuestion;
  /** IPv4 addresses (dotted quads) answered as A records of the question's name. */
  a?: string[];
  /** Seconds. */
  ttl?: number;
}

/** Parse a dotted quad into 4 bytes (null if it is not one). */
export function ipv4Bytes(s: string): number[] | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return null;
  const b = [Number(m[1]), Number(m[2]), Number(m[3]), Number(m[4])];
  return b.every((x) => x <= 255) ? b : null;
}

/** Encode an answer: header, the question echoed, then as many A records as fit MAX_ANSWER_BYTES. */
export function encodeAnswer(a: DnsAnswer): Uint8Array {
  const q = a.question;
  const qLen = q ? q.wire.length + 4 : 0;
  const records = (a.a ?? []).map(ipv4Bytes).filter((b): b is number[] => b !== null);
  const fit = Math.max(0, Math.min(records.length, Math.floor((MAX_ANSWER_BYTES - 12 - qLen) / 16)));
  const out = new Uint8Array(12 + qLen + fit * 16);
  out[0] = (a.id >> 8) & 0xff;
  out[1] = a.id & 0xff;
  out[2] = 0x80 | (a.aa ? 0x04 : 0) | (a.rd ? 0x01 : 0); // QR, opcode 0, AA, RD echoed
  out[3] = a.rcode & 0x0f; // RA 0: no recursion offered
  out[5] = q ? 1 : 0;
  out[6] = (fit >> 8) & 0xff;
  out[7] = fit & 0xff;
  let off = 12;
  if (q) {
    out.set(q.wire, off);
    off += q.wire.length;
    out[off++] = (q.type >> 8) & 0xff;
    out[off++] = q.type & 0xff;
    out[off++] = (q.class >> 8) & 0xff;
    out[off++] = q.class & 0xff;
  }
  const ttl = Math.max(0, Math.floor(a.ttl ?? 0));
  for (let i = 0; i < fit; i++) {
    const b = records[i]!;
    out.set([0xc0, 0x0c, 0, DNS_TYPE_A, 0, DNS_CLASS_IN, (ttl >>> 24) & 0xff, (ttl >>> 16) & 0xff, (ttl >>> 8) & 0xff, ttl & 0xff, 0, 4, b[0]!, b[1]!, b[2]!, b[3]!], off);
    off += 16;
  }
  return out;
}

/** Encode a query for `name` (tests and the test bed's probes). */
export function encodeQuery(id: number, name: string, type = DNS_TYPE_A): Uint8Array {
  const labels = name.replace(/\.$/, '').split('.').filter((l) => l !== '');
  const parts: number[] = [(id >> 8) & 0xff, id & 0xff, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
  for (const l of labels) {
    const bytes = [...new TextEncoder().encode(l)];
    parts.push(bytes.length, ...bytes);
  }
  parts.push(0, (type >> 8) & 0xff, type & 0xff, 0, DNS_CLASS_IN);
  return Uint8Array.from(parts);
}

/** Decode an answer's header and A records (tests; a malformed answer throws). */
export function decodeAnswer(buf: Uint8Array): { id: number; rcode: number; aa: boolean; tc: boolean; a: string[]; ttls: number[] } {
  if (buf.length < 12) throw new Error('short answer');
  const qd = (buf[4]! << 8) | buf[5]!;
  const an = (buf[6]! << 8) | buf[7]!;
  let off = 12;
  const skipName = (): void => {
    for (;;) {
      const len = buf[off];
      if (len === undefined) throw new Error('name cut short');
      if ((len & 0xc0) === 0xc0) {
        off += 2;
        return;
      }
      off += 1 + len;
      if (len === 0) return;
    }
  };
  for (let i = 0; i < qd; i++) {
    skipName();
    off += 4;
  }
  const a: string[] = [];
  const ttls: number[] = [];
  for (let i = 0; i < an; i++) {
    skipName();
    if (off + 10 > buf.length) throw new Error('record cut short');
    const type = (buf[off]! << 8) | buf[off + 1]!;
    const ttl = ((buf[off + 4]! << 24) | (buf[off + 5]! << 16) | (buf[off + 6]! << 8) | buf[off + 7]!) >>> 0;
    const rdlen = (buf[off + 8]! << 8) | buf[off + 9]!;
    off += 10;
    if (off + rdlen > buf.length) throw new Error('rdata cut short');
    if (type === DNS_TYPE_A && rdlen === 4) {
      a.push(`${buf[off]}.${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}`);
      ttls.push(ttl);
    }
    off += rdlen;
  }
  return { id: (buf[0]! << 8) | buf[1]!, rcode: buf[3]! & 0x0f, aa: (buf[2]! & 0x04) !== 0, tc: (buf[2]! & 0x02) !== 0, a, ttls };
}
