//! `$disconnect`: forget the connection and its subscriptions.

use std::sync::Arc;

use crate::ports::{ConnectionRegistry, StoreError};

pub struct Disconnect {
    registry: Arc<dyn ConnectionRegistry>,
}

impl Disconnect {
    pub fn new(registry: Arc<dyn ConnectionRegistry>) -> Self {
        Self { registry }
    }

    /// `true` when the connection was known. Idempotent.
    pub async fn disconnect(&self, connection_id: &str) -> Result<bool, StoreError> {
        let known = self.registry.remove_connection(connection_id).await?;
        ::metrics::counter!(crate::metrics::CONNECTIONS_CLOSED).increment(1);
        Ok(known)
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
        let d = Disconnect::new(reg.clone());
        assert!(d.disconnect("c1").await.unwrap());
        assert!(reg.subscribers(&key).await.unwrap().is_empty());
        assert!(reg.get_connection("c1").await.unwrap().is_none());
        assert!(
            !d.disconnect("c1").await.unwrap(),
            "second disconnect is a no-op"
        );
    }
}
