// Majority arithmetic of the Raft core (etcd's quorum/): the commit index the voters' match
// indexes imply, and the outcome of a (pre-)vote. Pure: no IO.
import type { NodeId } from './types.js';

/** Votes needed among `voters` members: a strict majority. */
export function majority(voters: number): number {
  return Math.floor(voters / 2) + 1;
}

/** The largest index that a majority of `voters` holds, given each one's match index. */
export function committedIndex(voters: Iterable<NodeId>, match: (id: NodeId) => number): number {
  const matches: number[] = [];
  for (const id of voters) matches.push(match(id));
  matches.sort((a, b) => b - a);
  return matches[majority(matches.length) - 1] ?? 0;
}

export type VoteResult = 'won' | 'lost' | 'pending';

/** Tallies the answers of `voters` (answers of non-voters are ignored): decided once either side has a majority. */
export function voteResult(voters: ReadonlySet<NodeId>, votes: ReadonlyMap<NodeId, boolean>): VoteResult {
  let granted = 0;
  let rejected = 0;
  for (const [id, v] of votes) {
    if (!voters.has(id)) continue;
    if (v) granted++;
    else rejected++;
  }
  const q = majority(voters.size);
  if (granted >= q) return 'won';
  if (rejected >= q) return 'lost';
  return 'pending';
}
