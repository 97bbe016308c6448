// Raft's errors as the API reports them.
import { RaftError } from '../raft/types.js';
import { FlotillaError, toFlotillaError } from '../protocol/errors.js';

export function raftToFlotilla(e: unknown): FlotillaError {
  if (e instanceof RaftError) {
    switch (e.code) {
      case 'not_leader':
        return new FlotillaError('not_leader', e.message, { leader: e.leader, httpStatus: 503 });
      case 'transfer_in_progress':
        return new FlotillaError('unavailable', e.message, { leader: null });
      case 'conf_change_pending':
        return new FlotillaError('conflict', e.message);
      case 'invalid':
        return new FlotillaError('bad_request', e.message);
      default:
        return new FlotillaError('unavailable', e.message, { leader: null });
    }
  }
  return toFlotillaError(e);
}
