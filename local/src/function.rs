//! Which function's code the gateway is running: set around every handler
//! invocation (and around the event sources' SQS calls, which Lambda makes
//! with the function's role), so that a tool can attribute each AWS call to
//! the function that made it (the e2e suite's IAM check does).

use std::future::Future;

tokio::task_local! {
    static FUNCTION: &'static str;
}

/// Runs `f` as function `name` (`connect`, `join`, `disconnect`,
/// `dispatcher`, `webhook`, `publish`).
pub async fn scope<F: Future>(name: &'static str, f: F) -> F::Output {
    FUNCTION.scope(name, f).await
}

/// The function whose code is running on this task, if any.
pub fn current() -> Option<&'static str> {
    FUNCTION.try_with(|f| *f).ok()
}
