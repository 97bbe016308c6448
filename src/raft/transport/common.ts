// What the transport's parts share: its settings, counters and log function, the WebSocket close
// codes it uses, and the narrow view of the transport a connection gets (LinkHost).
import type { RawData } from 'ws';
import type { NodeId } from '../types.js';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFn = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => void;

export interface TransportStats {
  framesSent: number;
  framesReceived: number;
  bytesSent: number;
  bytesReceived: number;
  /** Messages dropped because a peer's queue was full. */
  droppedQueueFull: number;
  /** Messages dropped because they could not fit in a frame. */
  droppedTooLarge: number;
  authFailures: number;
  /** Connections closed because of a malformed, oversized or unexpected frame. */
  badFrames: number;
  snapshotsSent: number;
  snapshotsReceived: number;
}

export interface Settings {
  maxFrameBytes: number;
  chunkBytes: number;
  maxSnapshotBytes: number;
  maxQueue: number;
  backoffMinMs: number;
  backoffMaxMs: number;
  handshakeTimeoutMs: number;
  snapshotAckTimeoutMs: number;
  pingIntervalMs: number;
  path: string;
  /** Pause sending while this many bytes are buffered on a socket. */
  highWater: number;
}

// WebSocket close codes used here.
export const CLOSE_NORMAL = 1000;
export const CLOSE_GOING_AWAY = 1001;
export const CLOSE_UNSUPPORTED = 1003; // text frame
export const CLOSE_INVALID = 1007; // malformed frame
export const CLOSE_POLICY = 1008; // authentication / protocol violation

export function rawToBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

/** What a connection (outbound or inbound) uses of its transport. */
export interface LinkHost {
  readonly id: NodeId;
  readonly counters: TransportStats;
  readonly isClosed: boolean;
  readonly secret: string;
  /** This node's cluster id ('' if none). */
  readonly clusterId: string;
  log(level: LogLevel, msg: string, fields?: Record<string, unknown>): void;
  /** An authenticated peer proved it belongs to another cluster. */
  foreignCluster(peer: NodeId, clusterId: string): void;
  /** An established connection with `peer` closed (either direction): core-linkdown.ts. */
  linkDown(peer: NodeId): void;
}
