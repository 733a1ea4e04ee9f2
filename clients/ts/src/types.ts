import type { AgentWireMessage, AgentWireMessageLost } from "./chunks.js";

/** One event, as the gateway sends it (an `event` frame without `type`). */
export interface AgentWireEvent<D = unknown> {
  channel: string;
  seq: number;
  epoch: string;
  id: string;
  kind: string;
  data: D;
  ts: string;
}

/** Seqs `from..=to` of the channel will never be delivered: they have left
 * the channel's log (expired, or the log was reset). Delivery goes on after `to`. */
export interface AgentWireGap {
  channel: string;
  from: number;
  to: number;
  reason: "expired";
}

/** Where a channel's delivery stands: its log's epoch and the last delivered seq. */
export interface Position {
  epoch: string;
  seq: number;
}

/** Where a channel's first join starts. Absent: the principal's durable cursor. */
export type Since = "head" | Position;

export interface Presence {
  count: number;
  principals: string[];
}

export interface ChannelHealth {
  server?: string;
  protocol?: number;
  time?: string;
  head?: number;
  oldest?: number;
}

/** A (re)join answered for one channel. */
export interface JoinedInfo {
  channel: string;
  epoch: string;
  head: number;
  replayed: number;
  recovered: boolean;
  /** The replay stops at this seq (a page); the client joins again from there by itself. */
  until?: number;
  presence?: Presence;
  health?: ChannelHealth;
}

/** What `stream()` yields. */
export type StreamItem<D = unknown> =
  | ({ type: "event" } & AgentWireEvent<D>)
  | ({ type: "gap" } & AgentWireGap)
  | ({ type: "message" } & AgentWireMessage)
  | ({ type: "message_lost" } & AgentWireMessageLost);
