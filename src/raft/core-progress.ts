// The leader's view of its followers (etcd's tracker): one Progress per member, with the
// probe / replicate / snapshot states and the in-flight window of appends. Pure: no IO.
export type ProgressState = 'probe' | 'replicate' | 'snapshot';

/** The leader's view of one follower (etcd's Progress / tracker). */
export class Progress {
  match = 0;
  next: number;
  state: ProgressState = 'probe';
  probeSent = false;
  pendingSnapshot = 0;
  recentActive = true;
  /** In-flight appends in replicate state: last index of each message and its bytes. */
  inflight: { index: number; bytes: number }[] = [];
  inflightBytes = 0;

  constructor(next: number) {
    this.next = next;
  }

  reset(state: ProgressState): void {
    this.state = state;
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.inflight = [];
    this.inflightBytes = 0;
  }

  becomeProbe(): void {
    if (this.state === 'snapshot') {
      const ps = this.pendingSnapshot;
      this.reset('probe');
      this.next = Math.max(this.match + 1, ps + 1);
    } else {
      this.reset('probe');
      this.next = this.match + 1;
    }
  }

  becomeReplicate(): void {
    this.reset('replicate');
    this.next = this.match + 1;
  }

  becomeSnapshot(index: number): void {
    this.reset('snapshot');
    this.pendingSnapshot = index;
  }

  /** Acknowledgement up to n. Returns whether match moved. */
  maybeUpdate(n: number): boolean {
    let updated = false;
    if (this.match < n) {
      this.match = n;
      updated = true;
      this.probeSent = false;
    }
    this.next = Math.max(this.next, n + 1);
    return updated;
  }

  /** A rejection of the append after `rejected`; `hint` is the follower's largest possible match. */
  maybeDecrTo(rejected: number, hint: number): boolean {
    if (this.state === 'replicate') {
      if (rejected <= this.match) return false; // stale
      this.next = this.match + 1;
      return true;
    }
    if (this.next - 1 !== rejected) return false; // stale
    this.next = Math.max(Math.min(rejected, hint + 1), this.match + 1);
    this.probeSent = false;
    return true;
  }

  freeTo(index: number): void {
    while (this.inflight.length > 0 && this.inflight[0]!.index <= index) {
      this.inflightBytes -= this.inflight.shift()!.bytes;
    }
  }

  freeFirst(): void {
    const f = this.inflight.shift();
    if (f) this.inflightBytes -= f.bytes;
  }

  isPaused(maxMsgs: number, maxBytes: number): boolean {
    switch (this.state) {
      case 'probe':
        return this.probeSent;
      case 'replicate':
        return this.inflight.length >= maxMsgs || this.inflightBytes >= maxBytes;
      case 'snapshot':
        return true;
    }
  }
}

export interface PeerStatus {
  match: number;
  next: number;
  state: ProgressState;
  recentActive: boolean;
  learner: boolean;
}

