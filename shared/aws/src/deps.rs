//! The composition root: real adapters for the use cases, built once per cold
//! start (SDK clients are reused across invocations).

use std::sync::Arc;

use aws_config::{BehaviorVersion, SdkConfig};

use agentwire_core::auth::jwks::{JwksCache, JwksPolicy};
use agentwire_core::auth::{Keyring, Verifier};
use agentwire_core::clock::{Clock, SystemClock};
use agentwire_core::config::{Config, ConfigError};
use agentwire_core::usecases::delivery::DeliveryPath;
use agentwire_core::usecases::delivery::webhook::Deliverer;
use agentwire_core::usecases::delivery::{Delivery, SETTINGS_TTL};
use agentwire_core::usecases::session::ReplayBudget;
use agentwire_core::usecases::{
    ChannelAdmin, ChannelReads, Committer, Connect, DeadWebhooks, Disconnect, Dispatcher,
    FanoutWorker, IdentityAdmin, Management, Publisher, Quotas, Session, TenantAdmin, WebhookAdmin,
};

use crate::{
    ApiGatewayPusher, DynamoCursors, DynamoIdentity, DynamoLimits, DynamoLog, DynamoRegistry,
    DynamoWebhooks, ReqwestJwks, ReqwestSender, SqsDeadLetters, SqsEventQueue, SqsFanoutQueue,
    SqsWebhookJobs,
};

/// The AWS SDK configuration from the environment (`AWS_REGION`,
/// `AWS_ENDPOINT_URL`, credentials chain).
pub async fn sdk_config_from_env() -> SdkConfig {
    aws_config::load_defaults(BehaviorVersion::latest()).await
}

/// Shared clients and adapters; each function takes the use case it serves.
#[derive(Clone)]
pub struct Deps {
    pub sdk: SdkConfig,
    pub config: Config,
    pub registry: Arc<DynamoRegistry>,
    pub log: Arc<DynamoLog>,
    pub cursors: Arc<DynamoCursors>,
    /// Webhook configurations without their secrets (dispatch, reads).
    pub webhooks: Arc<DynamoWebhooks>,
    /// The same with their signing secrets (delivery, management).
    pub webhook_secrets: Arc<DynamoWebhooks>,
    pub limits: Arc<DynamoLimits>,
    /// Trusted issuers and revocations (on the limits table).
    pub identity: Arc<DynamoIdentity>,
    pub clock: Arc<dyn Clock>,
    /// The one DynamoDB client every adapter shares.
    pub ddb: aws_sdk_dynamodb::Client,
}

impl Deps {
    pub fn new(sdk: &SdkConfig, config: Config) -> Self {
        Self::with_dynamodb(sdk, aws_sdk_dynamodb::Client::new(sdk), config)
    }

    /// Like [`Deps::new`], with a DynamoDB client built by the caller (for
    /// example with an interceptor that counts calls).
    pub fn with_dynamodb(sdk: &SdkConfig, ddb: aws_sdk_dynamodb::Client, config: Config) -> Self {
        Self::with_clock(sdk, ddb, config, Arc::new(SystemClock))
    }

    /// Like [`Deps::with_dynamodb`], with the clock every adapter and use
    /// case reads (tests move it instead of waiting).
    pub fn with_clock(
        sdk: &SdkConfig,
        ddb: aws_sdk_dynamodb::Client,
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let tables = config.tables.clone();
        Self {
            sdk: sdk.clone(),
            registry: Arc::new(DynamoRegistry::new(
                ddb.clone(),
                tables.clone(),
                clock.clone(),
            )),
            log: Arc::new(DynamoLog::new(ddb.clone(), tables.clone(), clock.clone())),
            cursors: Arc::new(DynamoCursors::new(
                ddb.clone(),
                tables.clone(),
                clock.clone(),
            )),
            limits: Arc::new(DynamoLimits::new(ddb.clone(), tables.limits.clone())),
            identity: Arc::new(DynamoIdentity::new(ddb.clone(), tables.limits.clone())),
            webhooks: Arc::new(DynamoWebhooks::new(
                ddb.clone(),
                tables.clone(),
                clock.clone(),
            )),
            webhook_secrets: Arc::new(
                DynamoWebhooks::new(ddb.clone(), tables, clock.clone()).with_secrets(),
            ),
            ddb,
            clock,
            config,
        }
    }

    /// From the environment: [`Config::from_env`] and the SDK's own settings.
    /// The token keys are read from Secrets Manager here when
    /// `AGENTWIRE_JWT_SECRET_ID` names a secret.
    pub async fn from_env() -> Result<Self, ConfigError> {
        let mut config = Config::from_env()?;
        let sdk = sdk_config_from_env().await;
        crate::secrets::resolve_jwt_keys(&sdk, &mut config).await?;
        Ok(Self::new(&sdk, config))
    }

    pub fn connect(&self) -> Result<Connect, ConfigError> {
        Ok(Connect::new(
            self.registry.clone(),
            self.verifier()?,
            self.clock.clone(),
            self.config.max_connection,
        )
        .with_quotas(self.quotas()))
    }

    /// Tenants' limits, for the operator.
    pub fn tenant_admin(&self) -> TenantAdmin {
        TenantAdmin::new(
            self.limits.clone(),
            self.registry.clone(),
            self.config.default_limits.clone(),
        )
    }

    /// The quota checks over the limits table, with the deployment's defaults.
    pub fn quotas(&self) -> Arc<Quotas> {
        Arc::new(
            Quotas::new(
                self.limits.clone(),
                self.limits.clone(),
                self.config.default_limits.clone(),
                self.clock.clone(),
            )
            .with_cache_for(self.config.limits_cache),
        )
    }

    /// Posts to the API named by `AGENTWIRE_CONNECTIONS_ENDPOINT`.
    pub fn pusher(&self) -> Result<ApiGatewayPusher, ConfigError> {
        Ok(ApiGatewayPusher::new(
            &self.sdk,
            self.config.require_connections_endpoint()?,
        ))
    }

    pub fn session(&self) -> Result<Session, ConfigError> {
        Ok(Session::new(
            self.registry.clone(),
            self.log.clone(),
            self.cursors.clone(),
            Arc::new(self.pusher()?),
            self.clock.clone(),
            self.config.heartbeat_s,
        )
        .with_replay_budget(ReplayBudget {
            events: self.config.replay_max_events.max(1),
            bytes: self.config.replay_max_bytes.max(1),
        })
        .with_quotas(self.quotas())
        .with_verifier(self.verifier()?))
    }

    pub fn disconnect(&self) -> Disconnect {
        Disconnect::new(self.registry.clone(), self.clock.clone())
    }

    pub fn dispatcher(&self) -> Result<Dispatcher, ConfigError> {
        let sqs = aws_sdk_sqs::Client::new(&self.sdk);
        let dead_letters = SqsDeadLetters::new(sqs, self.config.require_events_dlq_url()?);
        Ok(Dispatcher::with_parts(
            self.committer(),
            self.delivery()?,
            Arc::new(dead_letters),
        ))
    }

    /// The fan-out function's use case: one shard range of a big channel.
    pub fn fanout_worker(&self) -> Result<FanoutWorker, ConfigError> {
        Ok(FanoutWorker::new(
            self.registry.clone(),
            Arc::new(self.pusher()?),
            self.clock.clone(),
            self.config.fanout_concurrency,
        ))
    }

    /// Webhook configuration on the channels table, with the deployment's URL rules.
    pub fn webhook_admin(&self) -> WebhookAdmin {
        WebhookAdmin::new(
            self.webhook_secrets.clone(),
            self.config.webhook_urls.clone(),
            self.clock.clone(),
        )
    }

    /// The webhook dead-letter queue, for the operator.
    pub fn dead_webhooks(&self) -> Result<DeadWebhooks, ConfigError> {
        let jobs = Arc::new(self.webhook_jobs()?);
        Ok(DeadWebhooks::new(jobs.clone(), jobs))
    }

    /// Channel settings (retention), for the operator.
    pub fn channel_admin(&self) -> ChannelAdmin {
        ChannelAdmin::new(self.log.clone(), self.config.min_retention)
    }

    /// The webhook job queue and its dead-letter queue.
    pub fn webhook_jobs(&self) -> Result<SqsWebhookJobs, ConfigError> {
        Ok(SqsWebhookJobs::new(
            aws_sdk_sqs::Client::new(&self.sdk),
            self.config.require_webhook_queue_url()?,
            self.config.require_webhook_dlq_url()?,
        ))
    }

    /// The webhook delivery use case.
    pub fn deliverer(&self) -> Result<Deliverer, ConfigError> {
        Ok(Deliverer::new(
            self.webhook_secrets.clone(),
            self.webhook_secrets.clone(),
            self.config.webhook_urls.clone(),
            Arc::new(ReqwestSender::new(self.config.webhook_timeout, 64 * 1024)),
            Arc::new(self.webhook_jobs()?),
            self.config.webhook_schedule.clone(),
            self.clock.clone(),
        )
        .with_holds(
            self.webhook_secrets.clone(),
            self.config.webhook_hold,
            // A probe's POST, its DNS and the queue calls around it.
            self.config.webhook_timeout
                + agentwire_core::webhook::url_policy::DNS_TIMEOUT
                + std::time::Duration::from_secs(5),
        ))
    }

    /// Validates and enqueues events (the publish function, the CLI, agents).
    pub fn publisher(&self) -> Result<Publisher, ConfigError> {
        Ok(
            Publisher::new(Arc::new(self.event_queue()?), self.clock.clone())
                .with_quotas(self.quotas()),
        )
    }

    /// The publish function's publisher: HTTP publishes committed and
    /// delivered directly (the events queue the fallback).
    pub fn direct_publisher(&self) -> Result<Publisher, ConfigError> {
        Ok(self.publisher()?.with_direct(
            self.committer(),
            self.delivery()?.with_path(DeliveryPath::Direct),
        ))
    }

    /// Commits runs of events to the log.
    pub fn committer(&self) -> Committer {
        Committer::new(self.log.clone(), self.clock.clone(), self.config.retention)
    }

    /// What happens after commit: posts (inline or by the fan-out queue)
    /// and the webhook hand-off.
    pub fn delivery(&self) -> Result<Delivery, ConfigError> {
        let delivery = Delivery::new(
            self.registry.clone(),
            Arc::new(self.pusher()?),
            self.clock.clone(),
            self.config.fanout_concurrency,
        );
        let delivery = match &self.config.fanout_queue_url {
            Some(url) => delivery.with_fanout_queue(
                Arc::new(SqsFanoutQueue::new(
                    aws_sdk_sqs::Client::new(&self.sdk),
                    url,
                )),
                self.config.fanout,
            ),
            None => delivery,
        };
        if self.config.webhook_queue_url.is_none() {
            return Ok(delivery);
        }
        Ok(delivery.with_webhooks(
            self.webhooks.clone(),
            Arc::new(self.webhook_jobs()?),
            SETTINGS_TTL,
        ))
    }

    /// The HTTP API's reads: history, presence, a channel's state.
    pub fn reads(&self) -> ChannelReads {
        ChannelReads::new(
            self.log.clone(),
            self.registry.clone(),
            self.webhooks.clone(),
            self.clock.clone(),
            self.config.retention,
        )
        .with_quotas(self.quotas())
    }

    /// The deployment's own token keys.
    pub fn keyring(&self) -> Result<Keyring, ConfigError> {
        self.config.keyring()
    }

    /// What the connect, session and publish functions verify tokens with:
    /// the deployment's keys, the tenants' trusted issuers (keys cached per
    /// instance) and revocations.
    pub fn verifier(&self) -> Result<Arc<Verifier>, ConfigError> {
        let jwks = Arc::new(JwksCache::new(
            Arc::new(ReqwestJwks::new(
                self.config.webhook_urls.clone(),
                self.config.jwks_timeout,
            )),
            self.clock.clone(),
            JwksPolicy::default(),
        ));
        Ok(Arc::new(
            Verifier::new(self.keyring()?, self.clock.clone())
                .with_trust(self.identity.clone(), jwks, self.config.trust_cache)
                .with_revocations(self.identity.clone()),
        ))
    }

    /// The management API of tenant admins (the admin function); closes
    /// revoked connections through the connections endpoint when set.
    pub fn management(&self) -> Result<Management, ConfigError> {
        let m = Management::new(
            self.verifier()?,
            self.webhook_admin(),
            self.identity_admin(),
            self.tenant_admin(),
            self.clock.clone(),
        );
        Ok(match self.config.connections_endpoint.as_deref() {
            Some(_) => m.with_closer(Arc::new(self.pusher()?)),
            None => m,
        })
    }

    /// Trusted issuers and revocations, for the operator and tenant admins.
    pub fn identity_admin(&self) -> IdentityAdmin {
        IdentityAdmin::new(
            self.identity.clone(),
            self.identity.clone(),
            self.registry.clone(),
            self.config.webhook_urls.clone(),
            self.clock.clone(),
        )
    }

    pub fn event_queue(&self) -> Result<SqsEventQueue, ConfigError> {
        Ok(SqsEventQueue::new(
            aws_sdk_sqs::Client::new(&self.sdk),
            self.config.require_events_queue_url()?,
        ))
    }
}
