// Configuration changes of the Raft core (etcd's confchange/): their encoding in log entries,
// the checks a proposal must pass, and their effect on the voter and learner sets. Single-server
// changes only (one node added or removed per entry). Pure: no IO.
import { EntryType, RaftError, type ConfChange, type ConfState, type Entry, type NodeId } from './types.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

export function encodeConfChange(cc: ConfChange): Uint8Array {
  return enc.encode(JSON.stringify(cc));
}

export function decodeConfChange(data: Uint8Array): ConfChange {
  return JSON.parse(dec.decode(data)) as ConfChange;
}

export function cloneConf(c: ConfState): ConfState {
  return { voters: [...c.voters], learners: [...c.learners] };
}

/** Throws (RaftError 'invalid') if `cc` makes no sense for the current members. */
export function checkConfChange(cc: ConfChange, voters: ReadonlySet<NodeId>, learners: ReadonlySet<NodeId>): void {
  const isVoter = voters.has(cc.node);
  const isLearner = learners.has(cc.node);
  if (cc.type === 'addVoter' && isVoter) throw new RaftError('invalid', `${cc.node} is already a voter`);
  if (cc.type === 'addLearner' && (isVoter || isLearner)) throw new RaftError('invalid', `${cc.node} is already a member`);
  if (cc.type === 'removeNode') {
    if (!isVoter && !isLearner) throw new RaftError('invalid', `${cc.node} is not a member`);
    if (isVoter && voters.size === 1) throw new RaftError('invalid', 'cannot remove the last voter');
  }
}

/** Applies `cc` to the member sets in place. */
export function applyToMembers(cc: ConfChange, voters: Set<NodeId>, learners: Set<NodeId>): void {
  switch (cc.type) {
    case 'addVoter':
      learners.delete(cc.node);
      voters.add(cc.node);
      break;
    case 'addLearner':
      if (!voters.has(cc.node)) learners.add(cc.node);
      break;
    case 'removeNode':
      voters.delete(cc.node);
      learners.delete(cc.node);
      break;
  }
}

/**
 * The voters that `entries` define, starting from `voters` (the configuration before them);
 * and the configuration entries after index `after`, each with the voters before it.
 */
export function votersInLog(
  voters: Iterable<NodeId>,
  entries: Entry[],
  after: number,
): { voters: NodeId[]; changes: { index: number; term: number; votersBefore: NodeId[] }[] } {
  const set = new Set(voters);
  const changes: { index: number; term: number; votersBefore: NodeId[] }[] = [];
  for (const e of entries) {
    if (e.type !== EntryType.ConfChange) continue;
    const cc = decodeConfChange(e.data);
    if (e.index > after) changes.push({ index: e.index, term: e.term, votersBefore: [...set] });
    if (cc.type === 'addVoter') set.add(cc.node);
    else if (cc.type === 'removeNode') set.delete(cc.node);
  }
  return { voters: [...set], changes };
}
