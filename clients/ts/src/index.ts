export { AgentWire, Channel, VERSION, PROTOCOL } from "./client.js";
export type {
  AgentWireOptions,
  ChannelOptions,
  ChannelEvents,
  ClientEvents,
  ConnectionState,
  ResyncInfo,
  StateChange,
  TokenContext,
  WebSocketConstructor,
  WebSocketLike,
} from "./client.js";
export { publish, publishBatch, MAX_BATCH_EVENTS } from "./publish.js";
export type {
  BatchEvent,
  FetchAnswer,
  FetchLike,
  PublishBatchOptions,
  PublishBatchResult,
  PublishOptions,
  PublishResult,
  PublishedEvent,
} from "./publish.js";
export { history, historyPages, presence, channelInfo, MAX_HISTORY_LIMIT, DEFAULT_HISTORY_LIMIT } from "./reads.js";
export type {
  ChannelInfo,
  ChannelPresence,
  HistoryGap,
  HistoryOptions,
  HistoryPage,
  ReadFetch,
  ReadOptions,
  WebhookInfo,
} from "./reads.js";
export { AgentWireError, UnauthorizedError, ProtocolError, ServerError } from "./errors.js";
export type { AgentWireErrorOptions } from "./errors.js";
export { Backoff } from "./backoff.js";
export type { BackoffOptions } from "./backoff.js";
export { Sequencer, DEFAULT_MAX_PENDING, DEFAULT_MAX_PENDING_BYTES } from "./sequencer.js";
export type { Delivery, SequencerOptions } from "./sequencer.js";
export type {
  AgentWireEvent,
  AgentWireGap,
  ChannelHealth,
  JoinedInfo,
  Position,
  Presence,
  Since,
  StreamItem,
} from "./types.js";
export { Reassembler, splitMessage, asEventData, MAX_MESSAGE_ID } from "./chunks.js";
export type { AgentWireMessage, AgentWireMessageLost, Assembled, ChunkHeader, Encoding, Payload } from "./chunks.js";
export { Coalescer, openStream, publishMessage, DEFAULT_WINDOW_MS, DEFAULT_MAX_BYTES } from "./stream.js";
export type { PublishStream, StreamOptions, MessageOptions, StreamEventData, HttpTarget } from "./stream.js";
export { NotFoundError, ConflictError } from "./errors.js";
export {
  getLimits,
  getWebhook,
  setWebhook,
  clearWebhook,
  rotateWebhook,
  listIssuers,
  trustIssuer,
  untrustIssuer,
  listRevocations,
  revoke,
} from "./admin.js";
export type {
  AdminFetch,
  AdminOptions,
  AdminRetryOptions,
  IssuerKeys,
  IssuerPreset,
  IssuerSpec,
  Limits,
  Revocation,
  RevokeOptions,
  RevokeResult,
  RotateWebhookOptions,
  SetWebhookOptions,
  TenantLimits,
  TrustedIssuer,
  TrustIssuerOptions,
  UntrustIssuerOptions,
  Webhook,
  WebhookMode,
  WebhookOptions,
} from "./admin.js";
