// Link-down: a pure part of the Raft core (see core.ts). The driver tells the core when its
// connection with a peer closed (message 'linkDown', local only, never on the wire). A process
// killed with SIGKILL has its TCP connections closed by the kernel at once, so its followers
// learn of its death in a round trip instead of waiting out an election timeout.
//
// Two effects, both liveness devices only (votes keep every term and log rule of Raft):
//  1. a follower whose link to its leader closed starts a pre-vote after a short delay (below)
//     instead of a whole randomised election timeout;
//  2. a voter whose own link to its leader closed (and that has not heard from that leader
//     since) no longer ignores (pre-)votes because it "heard from a leader recently".
// A healthy leader is not deposed by one flapping link: the other followers still hear from it,
// keep their lease and ignore the early pre-vote, which changes no term; the leader's next
// append brings the follower back. A frozen leader (SIGSTOP: its links stay open) is still
// replaced by the ordinary election timeout.

import type { NodeId } from './types.js';

/**
 * Ticks until the early pre-vote of `self` after its link to the leader `lost` closed, ≥ 1.
 * The surviving voters take turns by rank (sorted ids, the lost leader left out), each in its
 * own window of `electionTick / 6` ticks with a random offset inside it, the windows apart by
 * half a window: if two followers campaigned within one round trip, each could grant the
 * other's pre-vote and the real vote would split, which costs a whole election timeout. The
 * next in rank receives the first one's pre-vote before its own turn, grants it and drops its
 * early timer (core.ts, handleVoteRequest). A follower whose log is behind fails its pre-vote;
 * the next one in rank, with the newer log, wins one window later.
 */
export function linkDownDelay(self: NodeId, lost: NodeId, voters: ReadonlySet<NodeId>, electionTick: number, rand: (n: number) => number): number {
  const window = Math.max(1, Math.ceil(electionTick / 6));
  const gap = Math.max(1, Math.floor(window / 2));
  let rank = 0;
  for (const v of voters) if (v !== lost && v !== self && v < self) rank++;
  return 1 + rank * (window + gap) + rand(window);
}
