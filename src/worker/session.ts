// The worker's side of the session protocol: finding the leader, keeping one session to it,
// heartbeats (design principles 6, 8; swarmkit agent/session.go). What a session carries —
// the register's task list, what a welcome or an assignment set means for the tasks — is the
// agent's (agent.ts), reached through `SessionHost`.
//
//  * One session = one WebSocket to `ws://<manager>/v1/worker` and one `register` (carrying
//    every task the worker has, as its drivers see them). `redirect` → connect to the leader
//    (or the next manager when the leader is unknown); `welcome` → heartbeat every
//    `heartbeatMs` and report status; `reject` → log and retry later.
//  * ANY error ends the session: socket error/close, a malformed or unexpected frame, no
//    welcome in time, no pong to our WebSocket pings for a while (a frozen manager).
//  * Finding the leader is a race, not a queue: the client opens a session attempt to one
//    manager, then another every `huntStaggerMs` (300 ms) while none has answered the
//    connection (a connected manager is waited for: it redirects or welcomes), and at
//    once to any leader a `redirect` names; the first `welcome` wins and ends the others. A
//    frozen manager (SIGSTOP: its kernel accepts the connection, nobody answers) thus costs
//    one stagger step, not a handshake timeout, and the worker reaches a new leader well
//    within the leader's failover grace. Only when every manager failed does the client back
//    off (capped exponential with jitter, 100 ms → 5 s) before the next round; after losing
//    a welcomed session it hunts again at once. All timing is on the monotonic clock.

import type { NodeTls } from '../tls/pki.js';
import type { MeshPort, RegisterMsg, ServiceNames } from '../protocol/session.js';
import { FlotillaError } from '../protocol/errors.js';
import type { Logger } from '../log.js';
import type { DeliveredSecret } from '../protocol/secrets.js';
import { decodeSessionFrame, encodeSessionFrame, isKnownManagerMessage, parseManagerMessage, type AssignedTaskIn, type ManagerMessage } from '../protocol/frames.js';
import { monoNow, type Timers } from '../clock.js';
import { nodeTimers, wsDialer, type SessionDialer, type SessionLink } from './ports.js';

export type WelcomeIn = Extract<ManagerMessage, { t: 'welcome' }>;
export type OutgoingFrame = Parameters<typeof encodeSessionFrame>[0];

export interface Session {
  n: number;
  target: string;
  link: SessionLink;
  welcomed: boolean;
  sessionId: string | null;
  term: number | null;
  heartbeatMs: number;
  /** Monotonic ms of the last frame or pong from the manager. */
  lastHeard: number;
  /** Cancels of the session's pending timers. */
  timers: (() => void)[];
  ended: boolean;
  /** `assignments` messages received in this session. */
  assignments: number;
  /** Set by a hunt: asked before a welcome is accepted. */
  onWelcome?: (s: Session) => boolean;
  end: (why: string, outcome?: Partial<SessionOutcome>) => void;
}

interface SessionHooks {
  /** The attempt exists (so the hunt can end it). */
  onStart?: (s: Session) => void;
  /** A manager welcomed this attempt: false refuses it (another attempt already won). */
  onWelcome?: (s: Session) => boolean;
}

interface SessionOutcome {
  welcomed: boolean;
  redirectTo: string | null;
  rejected: boolean;
  /** A live manager said no leader is known yet: the cluster is electing one. */
  electing?: boolean;
  why: string;
}

/** What the session client asks of the agent. */
export interface SessionHost {
  /** The `register` of a new session (its connection just opened). */
  register(): RegisterMsg;
  /** A manager welcomed session `s` (it is now the current one); before heartbeats start. */
  welcomed(s: Session, msg: WelcomeIn): void;
  /** The welcomed session runs (heartbeats started): time to send what waited for it. */
  established(s: Session): void;
  /** A complete assignment set arrived in session `s`. */
  /** `extra`: the opened secrets the tasks name (each once) and the volumes to delete. */
  assignments(s: Session, tasks: AssignedTaskIn[], extra: { secrets: DeliveredSecret[]; dropVolumes: string[] }): void;
  /** The routing mesh's table arrived (see `EndpointsMsg`). */
  endpoints?(ports: MeshPort[], names?: ServiceNames[]): void;
}

export interface SessionClientOptions {
  /** Seed manager addresses (host:port). */
  managers: string[];
  token: string;
  tls?: NodeTls;
  log: Logger;
  backoffMinMs: number;
  backoffMaxMs: number;
  welcomeTimeoutMs: number;
  huntStaggerMs: number;
  /** How a connection to a manager is opened. Default: a WebSocket (`wsDialer`). */
  dial?: SessionDialer;
  /** Default: Node timers. */
  timers?: Timers;
  /** Backoff jitter source. Default Math.random. */
  random?: () => number;
}

function errMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Finds the leader and keeps a session with it until `stop()`. */
export class SessionClient {
  private readonly host: SessionHost;
  private readonly opts: SessionClientOptions;
  private readonly log: Logger;
  private readonly seeds: string[];
  private managerList: string[];
  private cursor = 0;
  private session: Session | null = null;
  /** Session attempts in flight (one welcomed at most), ended on stop. */
  private readonly attempts = new Set<Session>();
  private sessionCount = 0;
  private loopDone: Promise<void> | null = null;
  private readonly abort = new AbortController();
  private stopped = false;
  private readonly timers: Timers;

  constructor(host: SessionHost, opts: SessionClientOptions) {
    this.host = host;
    this.opts = opts;
    this.timers = opts.timers ?? nodeTimers;
    this.log = opts.log;
    this.seeds = [...new Set(opts.managers)];
    this.managerList = [...this.seeds];
  }

  /** The managers the cluster told us about (the seeds until then). */
  get managers(): string[] {
    return [...this.managerList];
  }

  /** Session attempts made so far. */
  get sessions(): number {
    return this.sessionCount;
  }

  /** The current session (connecting or welcomed), if any. */
  get current(): Session | null {
    return this.session;
  }

  /** The welcomed session that still runs, if any. */
  get established(): Session | null {
    const s = this.session;
    return s !== null && s.welcomed && !s.ended ? s : null;
  }

  /** Start looking for the leader (and keep doing so until `stop()`). */
  start(): void {
    if (this.stopped || this.loopDone !== null) return;
    this.loopDone = this.loop();
  }

  /** End every session and attempt; `done()` settles when the loop has returned. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.abort.abort();
    this.session?.end('worker closing');
    for (const a of [...this.attempts]) a.end('worker closing');
  }

  async done(): Promise<void> {
    await this.loopDone;
  }

  send(s: Session, msg: OutgoingFrame): boolean {
    if (s.ended || !s.link.isOpen) return false;
    let frame: Buffer;
    try {
      frame = encodeSessionFrame(msg);
    } catch (e) {
      this.log.error('cannot encode a frame; ending the session', { error: errMessage(e) });
      s.end(`cannot encode: ${errMessage(e)}`);
      return false;
    }
    s.link.send(frame, (err) => {
      if (err) s.end(`send failed: ${errMessage(err)}`);
    });
    return true;
  }

  /** The managers the cluster told us about, then the seeds. */
  private candidates(): string[] {
    return [...new Set([...this.managerList, ...this.seeds])];
  }

  private setManagers(list: string[]): void {
    const clean = [...new Set(list.filter((m) => /^[^\s/]+:\d{1,5}$/.test(m)))];
    if (clean.length === 0) return;
    if (clean.join(',') !== this.managerList.join(',')) this.log.info('managers updated', { managers: clean });
    this.managerList = clean;
  }

  private backoff(failures: number): number {
    const cap = Math.min(this.opts.backoffMaxMs, this.opts.backoffMinMs * 2 ** Math.min(failures, 20));
    return cap / 2 + (this.opts.random ?? Math.random)() * (cap / 2); // "equal jitter"
  }

  private async loop(): Promise<void> {
    let failures = 0;
    let electing = 0;
    let last: string | null = null;
    while (!this.stopped) {
      const out = await this.hunt(last);
      if (this.stopped) break;
      last = out.target;
      let delay: number;
      if (out.welcomed) {
        // Lost a working session (often: the leader died or froze): look again at once.
        failures = 0;
        electing = 0;
        delay = this.backoff(0);
      } else if (out.electing) {
        // A manager answered but the cluster is electing a leader: ask again soon, without
        // growing the backoff much — the worker must be back within the new leader's failover
        // grace (100 ms rounds for the first second or so, then at most 800 ms).
        delay = this.backoff(Math.min(3, Math.floor(electing++ / 10)));
      } else {
        // No manager could be reached (or all refused us): back off per full round.
        failures++;
        delay = this.backoff(out.rejected ? Math.max(failures, 5) : failures - 1);
      }
      this.log.debug('no session', { why: out.why, retryInMs: Math.round(delay) });
      if (delay > 0) await sleep(delay, this.abort.signal, this.timers);
    }
  }

  /**
   * One round of looking for the leader: session attempts race (see the header). Resolves when
   * the welcomed session ends, or when every attempt of the round ended without a welcome.
   */
  private hunt(avoid: string | null): Promise<SessionOutcome & { target: string | null }> {
    return new Promise((done) => {
      const list = this.candidates();
      const first = this.cursor % list.length;
      this.cursor = (this.cursor + 1) % list.length;
      let order = [...list.slice(first), ...list.slice(0, first)];
      // The manager of the session just lost goes last: it may be the one that froze.
      if (avoid !== null && order.length > 1 && order.includes(avoid)) order = [...order.filter((m) => m !== avoid), avoid];
      const tried = new Set<string>();
      const live = new Set<Session>();
      let running = 0;
      let winner: Session | null = null;
      let finished = false;
      let electing = false;
      let rejected = false;
      let why = 'no manager to try';
      let lastTarget: string | null = null;
      // A manager whose connection opened answers at once (followers redirect) or after a
      // commit (the leader welcomes): wait for it rather than register twice with the same
      // leader under two addresses. Only attempts that did not even open (a frozen or dead
      // manager) make the hunt widen.
      const stopStagger = this.timers.every(this.opts.huntStaggerMs, () => {
        if (winner === null && ![...live].some((a) => !a.ended && a.link.isOpen)) startNext();
      });
      const finish = (out: SessionOutcome & { target: string | null }): void => {
        if (finished) return;
        finished = true;
        stopStagger();
        for (const a of live) if (a !== winner) a.end('no longer needed');
        done(out);
      };
      const startNext = (): void => {
        const t = order.find((m) => !tried.has(m));
        if (t !== undefined) start(t);
      };
      const start = (target: string): void => {
        if (finished || this.stopped || tried.has(target)) return;
        tried.add(target);
        running++;
        let mine: Session | null = null;
        void this.runSession(target, {
          onStart: (s) => {
            mine = s;
            live.add(s);
          },
          onWelcome: (s) => {
            if (winner !== null && winner !== s) return false;
            winner = s;
            stopStagger();
            for (const a of live) if (a !== s) a.end('another manager welcomed this worker');
            return true;
          },
        }).then((out) => {
          running--;
          if (mine !== null) live.delete(mine);
          lastTarget = target;
          if (out.welcomed && winner === mine) return finish({ ...out, target });
          if (finished) return;
          why = out.why;
          if (out.rejected) rejected = true;
          if (out.electing || out.redirectTo !== null) electing = true;
          if (winner === null) {
            if (out.redirectTo !== null && !tried.has(out.redirectTo)) start(out.redirectTo);
            else startNext();
          }
          if (running === 0 && winner === null) finish({ welcomed: false, redirectTo: null, rejected: rejected && !electing, electing, why, target: lastTarget });
        });
      };
      if (order.length === 0 || this.stopped) return finish({ welcomed: false, redirectTo: null, rejected: false, why, target: null });
      start(order[0]!);
    });
  }

  private runSession(target: string, hooks: SessionHooks = {}): Promise<SessionOutcome> {
    return new Promise((resolveOutcome) => {
      const n = ++this.sessionCount;
      const welcomeTimeoutMs = this.opts.welcomeTimeoutMs;
      // Events reach the session once it exists (a link reports nothing synchronously).
      let s: Session | null = null;
      let link: SessionLink;
      try {
        link = (this.opts.dial ?? wsDialer)(
          target,
          // Short: a live manager answers the upgrade at once; a frozen one must not hold the
          // attempt (other attempts race it anyway).
          { tls: this.opts.tls, token: this.opts.token, handshakeTimeoutMs: Math.min(welcomeTimeoutMs, 2000) },
          {
            open: () => s !== null && onOpen(s),
            message: (data, isBinary) => s !== null && onFrame(s, data, isBinary),
            pong: () => {
              if (s !== null) s.lastHeard = monoNow();
            },
            close: (code, reason) => s?.end(`connection closed (${code}${reason.length > 0 ? ` ${reason}` : ''})`),
            error: (e) => s?.end(`connection error: ${errMessage(e)}`),
          },
        );
      } catch (e) {
        resolveOutcome({ welcomed: false, redirectTo: null, rejected: false, why: `cannot connect: ${errMessage(e)}` });
        return;
      }
      const onOpen = (s: Session): void => {
        s.lastHeard = monoNow();
        const reg = this.host.register();
        this.log.debug('registering', { manager: target, tasks: reg.tasks.length });
        this.send(s, reg);
      };
      const onFrame = (s: Session, buf: Buffer, isBinary: boolean): void => {
        if (s.ended) return;
        s.lastHeard = monoNow();
        let msg: ManagerMessage;
        try {
          if (!isBinary) throw new FlotillaError('bad_request', 'text frame (session frames are binary)');
          const obj = decodeSessionFrame(buf);
          // A newer manager's message type: skipped, the session goes on.
          if (typeof obj.t === 'string' && !isKnownManagerMessage(obj)) {
            this.log.debug('unknown message type from manager ignored', { manager: target, t: obj.t.slice(0, 64) });
            return;
          }
          msg = parseManagerMessage(obj);
        } catch (e) {
          this.log.warn('malformed frame from manager; ending the session', { manager: target, error: errMessage(e) });
          s.end(`malformed frame: ${errMessage(e)}`);
          return;
        }
        try {
          this.onMessage(s, msg);
        } catch (e) {
          this.log.error('cannot handle a manager message; ending the session', { manager: target, t: msg.t, error: errMessage(e) });
          s.end(`cannot handle '${msg.t}': ${errMessage(e)}`);
        }
      };
      const sess: Session = {
        n,
        target,
        link,
        welcomed: false,
        sessionId: null,
        term: null,
        heartbeatMs: 0,
        lastHeard: monoNow(),
        timers: [],
        ended: false,
        assignments: 0,
        end: () => undefined,
      };
      s = sess;
      sess.end = (why, outcome = {}) => {
        if (sess.ended) return;
        sess.ended = true;
        for (const cancel of sess.timers) cancel();
        sess.timers = [];
        link.end(1000, why);
        if (this.session === sess) this.session = null;
        this.attempts.delete(sess);
        const level = sess.welcomed || outcome.redirectTo !== undefined ? 'info' : 'debug';
        this.log[level]('session ended', { manager: target, session: sess.sessionId, why });
        resolveOutcome({ welcomed: sess.welcomed, redirectTo: outcome.redirectTo ?? null, rejected: outcome.rejected ?? false, electing: outcome.electing, why });
      };
      if (this.session === null || this.session.ended) this.session = sess;
      this.attempts.add(sess);
      hooks.onStart?.(sess);
      sess.onWelcome = hooks.onWelcome;
      if (this.stopped) {
        sess.end('worker closing');
        return;
      }
      sess.timers.push(this.timers.after(welcomeTimeoutMs, () => sess.end(`no answer to register within ${welcomeTimeoutMs} ms`)));
    });
  }

  private onMessage(s: Session, msg: ManagerMessage): void {
    switch (msg.t) {
      case 'redirect': {
        this.setManagers(msg.managers);
        const leader = msg.leader !== null && msg.leader !== s.target ? msg.leader : null;
        this.log.info('redirected', { from: s.target, leader: msg.leader });
        s.end(`redirected to ${msg.leader ?? 'no known leader'}`, { redirectTo: leader, electing: msg.leader === null });
        return;
      }
      case 'reject':
        this.log.warn('registration rejected', { manager: s.target, reason: msg.reason });
        s.end(`rejected: ${msg.reason}`, { rejected: true });
        return;
      case 'welcome': {
        if (s.welcomed) throw new Error('a second welcome in one session');
        if (s.onWelcome !== undefined && !s.onWelcome(s)) {
          s.end('another manager welcomed this worker first');
          return;
        }
        s.welcomed = true;
        this.session = s;
        s.sessionId = msg.sessionId;
        s.term = msg.term;
        s.heartbeatMs = Math.max(10, msg.heartbeatMs);
        this.setManagers(msg.managers);
        for (const cancel of s.timers) cancel(); // the welcome timeout
        s.timers = [];
        this.host.welcomed(s, msg);
        this.log.info('session established', { manager: s.target, session: msg.sessionId, heartbeatMs: msg.heartbeatMs, term: msg.term });
        this.heartbeat(s);
        this.host.established(s);
        return;
      }
      case 'assignments':
        if (!s.welcomed) throw new Error("'assignments' before 'welcome'");
        this.host.assignments(s, msg.tasks, { secrets: msg.secrets ?? [], dropVolumes: msg.dropVolumes ?? [] });
        return;
      case 'managers':
        this.setManagers(msg.managers);
        return;
      case 'endpoints':
        if (!s.welcomed) throw new Error("'endpoints' before 'welcome'");
        this.host.endpoints?.(msg.ports, msg.names);
        return;
    }
  }

  /** Heartbeat every heartbeatMs; a WebSocket ping rides along, and silence ends the session. */
  private heartbeat(s: Session): void {
    const deadAfter = Math.max(4 * s.heartbeatMs, 3000);
    const tick = (): void => {
      if (s.ended) return;
      if (monoNow() - s.lastHeard > deadAfter) {
        s.end(`manager silent for ${deadAfter} ms`);
        return;
      }
      if (!this.send(s, { t: 'heartbeat' })) return;
      try {
        s.link.ping();
      } catch {
        // the close event ends the session
      }
      s.timers.push(this.timers.after(s.heartbeatMs, tick));
      if (s.timers.length > 8) s.timers.splice(0, s.timers.length - 8);
    };
    tick();
  }
}

function sleep(ms: number, signal: AbortSignal, timers: Timers): Promise<void> {
  return new Promise((res) => {
    if (signal.aborted) return res();
    const cancel = timers.after(ms, done);
    function done(): void {
      cancel();
      signal.removeEventListener('abort', done);
      res();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
