// Drain: tasks on a node set to `drain` are moved — re-queued with a forced restart (which does
// not count against their restart policy) so that placement puts them elsewhere. Runs when a
// node's availability changes and when this manager takes over as leader.
import type { SingleCommand, Task } from '../state.js';
import type { LeaderService, LeaderTerm, StateView } from '../ports.js';
import { wallNow } from '../../clock.js';

export class Drain implements LeaderService {
  readonly name = 'drain';
  private scheduled = false;
  private unsubscribe: (() => void) | null = null;

  constructor(private readonly d: { state: StateView; lead: LeaderTerm }) {}

  start(): void {
    this.stop();
    this.unsubscribe = this.d.state.onEvent((ev) => {
      if (ev.type === 'node.updated' && ev.change === 'availability') this.kick();
    });
    this.kick();
  }

  caughtUp(): void {
    this.kick();
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
  }

  private kick(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setTimeout(() => {
      this.scheduled = false;
      this.drain();
    }, 20).unref();
  }

  private drain(): void {
    if (this.d.lead.term() === null || !this.d.lead.caughtUp()) return;
    const moves: Task[] = [];
    for (const n of this.d.state.listNodes()) {
      if (n.availability !== 'drain') continue;
      for (const t of this.d.state.tasksOnNode(n.id)) {
        if (t.desired === 'running' && (t.state === 'assigned' || t.state === 'starting' || t.state === 'running')) moves.push(t);
      }
    }
    if (moves.length === 0) return;
    void this.d.lead.decide((term) => moves.map((t): SingleCommand => ({ type: 'task.restart', taskId: t.id, term, at: wallNow(), force: true, reason: `moved: node ${t.node} is draining` })));
  }
}
