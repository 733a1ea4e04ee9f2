//! Where the client gets its token: a fixed string, or a provider asked
//! again before every connection attempt (so an expired token is replaced).

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// The future a [`TokenProvider`] returns.
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

/// Mints or fetches a token. Implemented for any
/// `Fn() -> impl Future<Output = Result<String, E>>` with `E: Display`.
pub trait TokenProvider: Send + Sync + 'static {
    fn token(&self) -> TokenFuture;
}

impl<F, Fut, E> TokenProvider for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, E>> + Send + 'static,
    E: Display,
{
    fn token(&self) -> TokenFuture {
        let fut = self();
        Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
    }
}

/// The token source of one client.
#[derive(Clone)]
pub(crate) enum TokenSource {
    Fixed(String),
    Provider(Arc<dyn TokenProvider>),
}

impl TokenSource {
    pub(crate) async fn get(&self) -> Result<String, String> {
        match self {
            TokenSource::Fixed(t) => Ok(t.clone()),
            TokenSource::Provider(p) => p.token().await,
        }
    }

    pub(crate) fn renews(&self) -> bool {
        matches!(self, TokenSource::Provider(_))
    }
}
