//! SDK errors to port errors.

// The error types are the smithy runtime's, re-exported alike by every SDK crate.
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use agentwire_core::ports::StoreError;

/// Maps an SDK failure to the port error: throttling, server faults,
/// timeouts and connection failures are `Unavailable` (worth a retry);
/// everything else is `Failed`.
pub fn store_error<E, R>(op: &'static str, err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let reason = DisplayErrorContext(&err).to_string();
    let transient = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(se) => matches!(
            se.err().code(),
            Some(
                "ThrottlingException"
                    | "ProvisionedThroughputExceededException"
                    | "RequestLimitExceeded"
                    | "InternalServerError"
                    | "ServiceUnavailable"
                    | "TransactionInProgressException"
            )
        ),
        _ => false,
    };
    if transient {
        StoreError::Unavailable { op, reason }
    } else {
        StoreError::Failed { op, reason }
    }
}
