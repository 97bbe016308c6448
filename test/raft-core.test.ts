import { describe, expect, it } from 'vitest';
import { Net, bytes } from './helpers/net.js';

describe('raft core smoke', () => {
  it('elects a leader and replicates', () => {
    const net = new Net(['a', 'b', 'c']);
    net.settle();
    const l = net.elect('a');
    l.propose(bytes('x'));
    l.propose(bytes('y'));
    net.settle();
    net.tick(2);
    for (const id of ['a', 'b', 'c']) expect(net.data(id)).toEqual(['x', 'y']);
  });
});
