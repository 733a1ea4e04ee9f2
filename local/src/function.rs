//! Which function's code the gateway is running: set around every handler
//! invocation (and around the event sources' SQS calls, which Lambda makes
//! with the function's role), so that a tool can attribute each AWS call to
//! the function that made it (the e2e suite's IAM check does).

use std::future::Future;

tokio::task_local! {
    static FUNCTION: &'static str;
    static EVENT_SOURCE: ();
}

/// Runs `f` as function `name` (`connect`, `join`, `disconnect`,
/// `dispatcher`, `webhook`, `publish`).
pub async fn scope<F: Future>(name: &'static str, f: F) -> F::Output {
    FUNCTION.scope(name, f).await
}

/// Runs `f` as an event source's own call for function `name` (its SQS
/// receives and deletes: AWS's side of Lambda, made with the function's
/// role, which injected faults leave alone).
pub async fn event_source<F: Future>(name: &'static str, f: F) -> F::Output {
    FUNCTION.scope(name, EVENT_SOURCE.scope((), f)).await
}

/// Whether the code running on this task is a function's (not an event
/// source's own call, nor the gateway's).
pub fn in_function_code() -> bool {
    current().is_some() && EVENT_SOURCE.try_with(|_| ()).is_err()
}

/// The function whose code is running on this task, if any.
pub fn current() -> Option<&'static str> {
    FUNCTION.try_with(|f| *f).ok()
}
