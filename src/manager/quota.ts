// The quota on the size of the replicated state (like etcd's --quota-backend-bytes).
//
// Every manager holds the whole state in memory, and a snapshot of it briefly exists several
// times over (the encoded parts, the node snapshot buffer, LevelDB's write, a follower's
// received copy), so a manager needs roughly 3–4× the state size in memory at peak. The default
// of 256 MiB keeps a manager near 1 GiB at the limit; raise it with --quota-bytes on machines
// with more memory. 0 turns the quota off.
//
// The limit each write is checked against travels in its log entry (`quota` on kv.put and
// task.create), so all replicas apply the same rule even when their flags differ; the leader
// refuses a write that would not fit before proposing it. Deletes are always allowed.
import { FlotillaError } from '../protocol/errors.js';
import type { ClusterState, Command } from './state.js';

export const DEFAULT_QUOTA_BYTES = 256 * 1024 * 1024;

/**
 * Stamps `quota` on the writes of `cmd` that grow the state and throws `quota_exceeded` (507)
 * when one would not fit in `state` now. Returns the command to propose.
 */
export function applyQuota(cmd: Command, quota: number, state: ClusterState): Command {
  if (quota <= 0) return cmd;
  if (cmd.type === 'kv.put' || cmd.type === 'task.create' || cmd.type === 'service.create' || cmd.type === 'service.task') {
    const stamped = { ...cmd, quota };
    const err = state.quotaCheck(stamped);
    if (err) throw FlotillaError.fromInfo(err, 507);
    return stamped;
  }
  if (cmd.type === 'batch') return { ...cmd, commands: cmd.commands.map((c) => applyQuota(c, quota, state) as typeof c) };
  return cmd;
}
