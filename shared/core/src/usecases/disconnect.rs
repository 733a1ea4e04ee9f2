//! `$disconnect`: forget the connection and its subscriptions.

use std::sync::Arc;

use crate::clock::Clock;
use crate::ports::{ConnectionRegistry, StoreError};

pub struct Disconnect {
    registry: Arc<dyn ConnectionRegistry>,
    clock: Arc<dyn Clock>,
}

impl Disconnect {
    pub fn new(registry: Arc<dyn ConnectionRegistry>, clock: Arc<dyn Clock>) -> Self {
        Self { registry, clock }
    }

    /// `true` when this call removed the connection (its lifecycle is
    /// recorded, see [`super::lifecycle`]). Idempotent.
    pub async fn disconnect(&self, connection_id: &str) -> Result<bool, StoreError> {
        let removed =
            super::lifecycle::remove(self.registry.as_ref(), self.clock.as_ref(), connection_id)
                .await?;
        Ok(removed.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemoryRegistry, connection};
    use crate::model::ChannelKey;

    #[tokio::test]
    async fn removes_connection_and_subscriptions() {
        let reg = Arc::new(MemoryRegistry::default());
        let conn = connection("c1", "acme", "ana", &["*"]);
        reg.put_connection(&conn).await.unwrap();
        let key = ChannelKey::new("acme", "a");
        assert!(reg.subscribe(&conn, &key, u64::MAX).await.unwrap());
        let d = Disconnect::new(reg.clone(), Arc::new(crate::clock::SystemClock));
        assert!(d.disconnect("c1").await.unwrap());
        assert!(reg.subscribers(&key).await.unwrap().is_empty());
        assert!(reg.get_connection("c1").await.unwrap().is_none());
        assert!(
            !d.disconnect("c1").await.unwrap(),
            "second disconnect is a no-op"
        );
    }
}
