//! Where the client gets its token: a fixed string, or a provider asked
//! again before every connection attempt (so an expired token is replaced).

use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Why a token provider gave no token: the provider's own error, kept
/// whole (its causes included).
#[derive(Debug, Clone, thiserror::Error)]
#[error(transparent)]
pub struct TokenError(Arc<dyn Error + Send + Sync>);

impl TokenError {
    /// Any error, or a message (`&str`, `String`).
    pub fn new(e: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self(Arc::from(e.into()))
    }
}

/// Errors compare by what they say (the client's errors are comparable).
impl PartialEq for TokenError {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_string() == other.0.to_string()
    }
}

/// The future a [`TokenProvider`] returns.
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<String, TokenError>> + Send>>;

/// Mints or fetches a token. Implemented for any
/// `Fn() -> impl Future<Output = Result<String, E>>` with `E` an error
/// (or a message).
pub trait TokenProvider: Send + Sync + 'static {
    fn token(&self) -> TokenFuture;
}

impl<F, Fut, E> TokenProvider for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, E>> + Send + 'static,
    E: Into<Box<dyn Error + Send + Sync>>,
{
    fn token(&self) -> TokenFuture {
        let fut = self();
        Box::pin(async move { fut.await.map_err(TokenError::new) })
    }
}

/// The token source of one client.
#[derive(Clone)]
pub(crate) enum TokenSource {
    Fixed(String),
    Provider(Arc<dyn TokenProvider>),
}

impl TokenSource {
    pub(crate) async fn get(&self) -> Result<String, TokenError> {
        match self {
            TokenSource::Fixed(t) => Ok(t.clone()),
            TokenSource::Provider(p) => p.token().await,
        }
    }

    pub(crate) fn renews(&self) -> bool {
        matches!(self, TokenSource::Provider(_))
    }
}
