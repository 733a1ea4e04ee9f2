//! The pusher on the API Gateway Management API (`@connections`).

use async_trait::async_trait;
use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::config::http::HttpResponse;
use aws_sdk_apigatewaymanagement::error::{DisplayErrorContext, SdkError};
use aws_sdk_apigatewaymanagement::operation::delete_connection::DeleteConnectionError;
use aws_sdk_apigatewaymanagement::operation::post_to_connection::PostToConnectionError;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use std::time::Duration;

use agentwire_core::ports::{PushError, Pusher};

/// Posts frames with `PostToConnection`. `GoneException` is
/// [`PushError::Gone`]; `LimitExceededException` and 429 are
/// [`PushError::Throttled`]; 5xx, time-outs ([`CALL_TIMEOUT`]) and
/// connection failures are [`PushError::Unavailable`]; any other answer is
/// [`PushError::Refused`].
#[derive(Clone)]
pub struct ApiGatewayPusher {
    client: Client,
}

/// The most one `@connections` call may take, connecting included: a post
/// takes tens of milliseconds, so one that has no answer by then is
/// [`PushError::Unavailable`] (retried by the use case) rather than a wait
/// that holds the dispatcher until its function times out.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

impl ApiGatewayPusher {
    /// A pusher for the API at `endpoint` (`https://{api}.execute-api.{region}.amazonaws.com/{stage}`).
    pub fn new(sdk: &aws_config::SdkConfig, endpoint: &str) -> Self {
        Self::with_timeout(sdk, endpoint, CALL_TIMEOUT)
    }

    /// The same, each call bounded by `timeout`.
    pub fn with_timeout(sdk: &aws_config::SdkConfig, endpoint: &str, timeout: Duration) -> Self {
        // Retries are the use case's (bounded and jittered, see
        // `usecases::delivery::push`), not the SDK's on top of them.
        let conf = aws_sdk_apigatewaymanagement::config::Builder::from(sdk)
            .endpoint_url(endpoint)
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(timeout)
                    .operation_timeout(timeout)
                    .build(),
            )
            .build();
        Self {
            client: Client::from_conf(conf),
        }
    }
}

/// The push error of an SDK failure (`GoneException`, throttling, 5xx and
/// transport failures retryable, the rest refused).
fn push_error<E>(res: Result<(), SdkError<E, HttpResponse>>) -> Result<(), PushError>
where
    E: std::error::Error + GoneOrLimited + 'static,
{
    {
        match res {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|se| se.gone()) => Err(PushError::Gone),
            Err(e) => {
                let status = match &e {
                    SdkError::ServiceError(se) => Some(se.raw().status().as_u16()),
                    SdkError::ResponseError(r) => Some(r.raw().status().as_u16()),
                    _ => None,
                };
                let limited = e.as_service_error().is_some_and(|se| se.limited());
                let reason = DisplayErrorContext(&e).to_string();
                Err(match (&e, status) {
                    _ if limited || status == Some(429) => PushError::Throttled,
                    (SdkError::TimeoutError(_) | SdkError::DispatchFailure(_), _) => {
                        PushError::Unavailable { status, reason }
                    }
                    (_, Some(s)) if s >= 500 => PushError::Unavailable { status, reason },
                    _ => PushError::Refused { status, reason },
                })
            }
        }
    }
}

#[async_trait]
impl Pusher for ApiGatewayPusher {
    async fn post(&self, connection_id: &str, frame: &str) -> Result<(), PushError> {
        let res = self
            .client
            .post_to_connection()
            .connection_id(connection_id)
            .data(Blob::new(frame.as_bytes()))
            .send()
            .await;
        push_error(res.map(|_| ()))
    }

    async fn close(&self, connection_id: &str) -> Result<(), PushError> {
        let res = self
            .client
            .delete_connection()
            .connection_id(connection_id)
            .send()
            .await;
        push_error(res.map(|_| ()))
    }
}

/// What [`push_error`] asks of an operation's error.
trait GoneOrLimited {
    fn gone(&self) -> bool;
    fn limited(&self) -> bool;
}

impl GoneOrLimited for PostToConnectionError {
    fn gone(&self) -> bool {
        self.is_gone_exception()
    }
    fn limited(&self) -> bool {
        self.is_limit_exceeded_exception()
    }
}

impl GoneOrLimited for DeleteConnectionError {
    fn gone(&self) -> bool {
        self.is_gone_exception()
    }
    fn limited(&self) -> bool {
        self.is_limit_exceeded_exception()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// An endpoint that takes the connection and the request and never
    /// answers (a half-open connection, an endpoint that hangs): the post is
    /// `Unavailable` once the call's time-out has passed, never a wait
    /// without end.
    #[tokio::test]
    async fn a_post_that_gets_no_answer_is_unavailable_after_the_time_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut sockets = vec![];
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                sockets.push(socket);
            }
        });
        let sdk = aws_config::SdkConfig::builder()
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(
                aws_sdk_apigatewaymanagement::config::SharedCredentialsProvider::new(
                    aws_sdk_apigatewaymanagement::config::Credentials::for_tests(),
                ),
            )
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let pusher = ApiGatewayPusher::with_timeout(
            &sdk,
            &format!("http://{addr}"),
            Duration::from_millis(300),
        );
        let started = std::time::Instant::now();
        let err = pusher.post("c1", "{}").await.unwrap_err();
        assert!(
            matches!(err, PushError::Unavailable { .. }),
            "a time-out is retryable: {err:?}"
        );
        assert!(err.is_retryable());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let err = pusher.close("c1").await.unwrap_err();
        assert!(matches!(err, PushError::Unavailable { .. }), "{err:?}");
        held.abort();
    }
}
