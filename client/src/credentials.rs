//! Password and token authentication (issue 15): the `authorization: Bearer <token>`
//! metadata on every call a [`Client`](crate::Client) makes.
//!
//! With [`ClientAuth::Token`] the token is sent as given. With [`ClientAuth::Password`] the
//! client logs in (`Auth.Login` at the router it is about to call) before its first call, and
//! again once the token is within [`RENEW_BEFORE_EXPIRY`] of its expiry or a call was refused
//! `UNAUTHENTICATED` (a rotated token key); logins are serialised, so many concurrent calls
//! make one. The header is added by [`Bearer`], a tonic interceptor on each router channel.
//! TLS is still needed: a router reads tokens from TLS callers, with a certificate of the CA
//! or (unless it requires one) without; a node only from callers with a certificate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ringkv_proto::metadata::{AUTHORIZATION, BEARER_PREFIX};
use ringkv_proto::v1 as proto;
use ringkv_proto::v1::auth_client::AuthClient;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// How long before its expiry a password login's token is renewed.
pub const RENEW_BEFORE_EXPIRY: Duration = Duration::from_secs(30);

/// How a client authenticates beyond its TLS certificate.
#[derive(Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// Send this token (from `kvctl auth token` or [`Client::login`](crate::Client::login)).
    Token(String),
    /// Log in as `user` with `password` for tokens, renewed as they near expiry.
    Password { user: String, password: String },
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token or the password.
        match self {
            ClientAuth::Token(_) => f.write_str("Token(..)"),
            ClientAuth::Password { user, .. } => f
                .debug_struct("Password")
                .field("user", user)
                .finish_non_exhaustive(),
        }
    }
}

/// A token as a metadata value, when it expires and when to renew it (unix ms; None: a
/// given token, never renewed).
#[derive(Clone)]
struct Current {
    header: AsciiMetadataValue,
    expires_at_unix_ms: Option<u64>,
    renew_at_unix_ms: Option<u64>,
}

/// The credentials of one client, shared by its channels.
pub(crate) struct Credentials {
    auth: ClientAuth,
    current: RwLock<Option<Current>>,
    login: tokio::sync::Mutex<()>,
    /// Bumped whenever the token in use changes (a login, a forgotten token): a stream
    /// opened with an older token is reopened (`pipeline.rs`).
    generation: AtomicU64,
}

impl Credentials {
    /// Credentials for `auth`; a given token must be a valid metadata value.
    pub(crate) fn new(auth: ClientAuth) -> Result<Credentials, crate::Error> {
        let current = match &auth {
            ClientAuth::Token(token) => Some(Current {
                header: bearer_header(token)?,
                expires_at_unix_ms: None,
                renew_at_unix_ms: None,
            }),
            ClientAuth::Password { .. } => None,
        };
        Ok(Credentials {
            auth,
            current: RwLock::new(current),
            login: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
        })
    }

    fn header(&self) -> Option<AsciiMetadataValue> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current.as_ref().map(|current| current.header.clone())
    }

    /// The token in use now, if any.
    pub(crate) fn token(&self) -> Option<(String, Option<u64>)> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        let current = current.as_ref()?;
        let value = current.header.to_str().ok()?;
        let token = value.strip_prefix(BEARER_PREFIX)?;
        Some((token.to_string(), current.expires_at_unix_ms))
    }

    /// Forgets a password login's token (the server refused it), so the next call logs in.
    pub(crate) fn forget(&self) {
        if matches!(self.auth, ClientAuth::Password { .. }) {
            *self.current.write().unwrap_or_else(PoisonError::into_inner) = None;
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Which token is in use: changes whenever it does.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Logs in on `channel` unless a password login's token is fresh (a given token: nothing
    /// to do).
    pub(crate) async fn ensure(&self, channel: &Channel, timeout: Duration) -> Result<(), Status> {
        let ClientAuth::Password { user, password } = &self.auth else {
            return Ok(());
        };
        if self.is_fresh() {
            return Ok(());
        }
        let _turn = self.login.lock().await;
        if self.is_fresh() {
            return Ok(());
        }
        let mut request = Request::new(proto::LoginRequest {
            user: user.clone(),
            password: password.clone(),
        });
        request.set_timeout(timeout);
        let answer = AuthClient::new(channel.clone())
            .login(request)
            .await?
            .into_inner();
        let header = bearer_header(&answer.token).map_err(|err| Status::internal(err.to_string()))?;
        // Renewed RENEW_BEFORE_EXPIRY before expiry, or at half its life if that is shorter
        // (a cluster may hand out tokens of a few seconds).
        let life_ms = answer.expires_at_unix_ms.saturating_sub(now_unix_ms());
        let margin_ms = u64::try_from(RENEW_BEFORE_EXPIRY.as_millis())
            .unwrap_or(u64::MAX)
            .min(life_ms / 2);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(Current {
            header,
            expires_at_unix_ms: Some(answer.expires_at_unix_ms),
            renew_at_unix_ms: Some(answer.expires_at_unix_ms.saturating_sub(margin_ms)),
        });
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn is_fresh(&self) -> bool {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        let Some(current) = current.as_ref() else {
            return false;
        };
        current
            .renew_at_unix_ms
            .is_none_or(|renew_at_ms| now_unix_ms() < renew_at_ms)
    }
}

fn bearer_header(token: &str) -> Result<AsciiMetadataValue, crate::Error> {
    MetadataValue::try_from(format!("{BEARER_PREFIX}{token}"))
        .map_err(|_| crate::Error::InvalidArgument("a token is printable ASCII".into()))
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

/// Adds the current token (if any) to each request.
#[derive(Clone)]
pub(crate) struct Bearer(pub(crate) Option<Arc<Credentials>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = self.0.as_ref().and_then(|credentials| credentials.header()) {
            request.metadata_mut().insert(AUTHORIZATION, header);
        }
        Ok(request)
    }
}

/// A router channel that sends the client's token.
pub(crate) type AuthChannel = InterceptedService<Channel, Bearer>;
