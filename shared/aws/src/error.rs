//! SDK errors to port errors.

// The error types are the smithy runtime's, re-exported alike by every SDK crate.
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use agentwire_core::ports::StoreError;

/// Maps an SDK failure to the port error: throttling, server faults (any
/// 5xx), timeouts and connection failures are `Unavailable` (worth a
/// retry); everything else is `Failed`.
pub fn store_error<E>(op: &'static str, err: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let reason = DisplayErrorContext(&err).to_string();
    let transient = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(se) => {
            se.raw().status().is_server_error()
                || matches!(
                    se.err().code(),
                    Some(
                        "ThrottlingException"
                            | "Throttling"
                            | "RequestThrottled"
                            | "RequestThrottledException"
                            | "TooManyRequestsException"
                            | "ProvisionedThroughputExceededException"
                            | "RequestLimitExceeded"
                            | "InternalServerError"
                            | "InternalFailure"
                            | "ServiceUnavailable"
                            | "TransactionInProgressException"
                    )
                )
        }
        _ => false,
    };
    if transient {
        StoreError::Unavailable { op, reason }
    } else {
        StoreError::Failed { op, reason }
    }
}
