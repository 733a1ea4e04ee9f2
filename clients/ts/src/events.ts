/** What the client and its channels report to listeners. */
import type { AgentWireMessage, AgentWireMessageLost } from "./chunks.js";
import type { AgentWireError } from "./errors.js";
import type { AgentWireEvent, AgentWireGap, JoinedInfo, Position } from "./types.js";

export type ConnectionState = "idle" | "connecting" | "connected" | "reconnecting" | "closed";

export interface StateChange {
  previous: ConnectionState;
  current: ConnectionState;
  /** Why (the failure before a reconnect, `closed by the application`…). */
  reason: string;
  /** Reconnecting: the attempt that follows (from 1) and its delay in ms. */
  attempt?: number;
  delay?: number;
  /** Closed by a fatal error: the error. */
  error?: AgentWireError;
  /** Connected: the negotiated protocol and the gateway's connection id. */
  protocol?: number;
  connectionId?: string;
}


export interface ClientEvents {
  state: StateChange;
  error: AgentWireError;
}

export interface ChannelEvents {
  event: AgentWireEvent;
  gap: AgentWireGap;
  /** A message larger than one event, reassembled from its chunk events
   * (which are never delivered as `event`). */
  message: AgentWireMessage;
  /** A message that will never be delivered (a chunk is gone, it is over
   * `maxMessageBytes`, or its chunks disagree); reported once. */
  message_lost: AgentWireMessageLost;
  joined: JoinedInfo;
  /** `resync()` dropped the channel's position: what was delivered before
   * came first; the channel joins again from the head. */
  resync: ResyncInfo;
  /** The gateway refused the channel (`forbidden`, `invalid_channel`,
   * `too_many_channels`): it is dropped. */
  error: AgentWireError;
}

/** A channel's position dropped by `resync()`. */
export interface ResyncInfo {
  channel: string;
  /** Where delivery stood before (absent: nothing delivered yet). */
  previous?: Position;
}

