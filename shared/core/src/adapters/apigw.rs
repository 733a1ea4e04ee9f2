//! The pusher on the API Gateway Management API (`@connections`).

use async_trait::async_trait;
use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::error::DisplayErrorContext;
use aws_sdk_apigatewaymanagement::primitives::Blob;

use crate::ports::{PushError, Pusher};

/// Posts frames with `PostToConnection`. `GoneException` is [`PushError::Gone`].
#[derive(Clone)]
pub struct ApiGatewayPusher {
    client: Client,
}

impl ApiGatewayPusher {
    /// A pusher for the API at `endpoint` (`https://{api}.execute-api.{region}.amazonaws.com/{stage}`).
    pub fn new(sdk: &aws_config::SdkConfig, endpoint: &str) -> Self {
        let conf = aws_sdk_apigatewaymanagement::config::Builder::from(sdk)
            .endpoint_url(endpoint)
            .build();
        Self {
            client: Client::from_conf(conf),
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
        match res {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_gone_exception()) =>
            {
                Err(PushError::Gone)
            }
            Err(e) => Err(PushError::Failed(DisplayErrorContext(&e).to_string())),
        }
    }
}
