//! The end-to-end tests, in one binary (linked once, not once per file):
//! each module is one part of the system, on the local stack (the local
//! AWS endpoint, the dev gateway in-process, real WebSocket clients and
//! real HTTP receivers). Every test builds its own stack (tables, queues,
//! tenant, gateway), so they run in parallel.

mod backbone;
mod client;
mod console;
mod contract;
mod dedup;
mod fanout;
mod faults;
mod identity;
mod infra;
mod join_cost;
mod management;
mod observability;
mod publish;
mod quotas;
mod reads;
mod recovery;
mod replay;
mod secrets;
mod streams;
mod token_expiry;
mod webhooks;
