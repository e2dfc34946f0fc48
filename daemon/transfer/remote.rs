//! The client of other registries: the OCI Distribution / Docker Registry V2 protocol as a
//! client speaks it, over reqwest (rustls; HTTP/1.1 and HTTP/2).
//!
//! One [`Remote`] per registry: it decides HTTPS or plain HTTP once (plain only for
//! registries marked insecure, and loopback ones, as docker does), answers authentication
//! challenges (Basic, and the Docker token flow, anonymous or with credentials, reusing each
//! token until it expires) and turns every answer it does not expect into a [`RemoteError`]
//! that says what to do. It moves bytes and checks nothing of what they mean: callers
//! verify digests (see [`Verified`]). Must not call storage, metadata or the doors.

use bytes::Bytes;
use ecrl::manifest::{MAX_MANIFEST, OCI_INDEX};
use ecrl::names::{Digest, RepoName};
use ecrl::remote::{parse_challenges, parse_token_answer, token_url, Challenge};
use futures_util::{Stream, StreamExt};
use reqwest::header::{self, HeaderMap};
use reqwest::{RequestBuilder, Response, StatusCode};
use sha2::Digest as _;
use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Every manifest kind ecrl copies, as the `Accept` of a manifest request.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// How long to wait for a connection (and a TLS handshake).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long an answer may stall (no byte arriving) before the request fails.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// A token is renewed this long before the registry says it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(10);

/// How ecrl reaches one registry, from the daemon's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// PEM certificates to trust for this registry, besides the system's roots.
    pub ca_files: Vec<PathBuf>,
    /// Plain HTTP allowed, and any certificate accepted (docker's insecure-registries).
    pub insecure: bool,
    /// Where the message for an untrusted certificate says the CA goes.
    pub ca_hint: String,
}

/// What ecrl presents to a registry.
#[derive(Clone)]
pub enum Credentials {
    Basic {
        username: String,
        password: Zeroizing<String>,
    },
    /// An OAuth refresh token (docker's `identitytoken`), exchanged at the token endpoint.
    IdentityToken(Zeroizing<String>),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username})"),
            Credentials::IdentityToken(_) => f.write_str("IdentityToken"),
        }
    }
}

impl Credentials {
    pub fn username(&self) -> &str {
        match self {
            Credentials::Basic { username, .. } => username,
            Credentials::IdentityToken(_) => "<token>",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    #[error("cannot reach {registry}: {reason}")]
    Unreachable { registry: String, reason: String },
    #[error(
        "the certificate of {registry} is not trusted ({reason}): give ecrld its CA with \
         {hint}, or mark the registry insecure (mirror.registries.\"{registry}\".insecure) \
         if it is a test registry"
    )]
    Tls {
        registry: String,
        reason: String,
        hint: String,
    },
    #[error("{registry} refused the credentials{who}: {detail}")]
    Unauthorized {
        registry: String,
        who: String,
        detail: String,
    },
    #[error("{registry} denied access: {detail}")]
    Denied { registry: String, detail: String },
    #[error("{0}")]
    NotFound(String),
    #[error(
        "{registry} is rate limiting ecrl (429 Too Many Requests){}; log in to it \
         ('ecrl login {registry}') for a higher limit, or wait",
        retry_after.map(|s| format!(", retry after {s}s")).unwrap_or_default()
    )]
    TooManyRequests {
        registry: String,
        retry_after: Option<u64>,
    },
    /// Content that does not match the digest that names it.
    #[error("{0}")]
    Mismatch(String),
    #[error("{registry}: {detail}")]
    Protocol { registry: String, detail: String },
    /// The copy was stopped (the client went away, the daemon is stopping).
    #[error("stopped before it finished")]
    Cancelled,
}

impl RemoteError {
    /// Whether trying again later may succeed (a retry of the same request, or of the copy).
    pub fn is_transient(&self) -> bool {
        match self {
            RemoteError::Unreachable { .. } | RemoteError::TooManyRequests { .. } => true,
            RemoteError::Protocol { .. } | RemoteError::Mismatch(_) => true,
            RemoteError::Tls { .. }
            | RemoteError::Unauthorized { .. }
            | RemoteError::Denied { .. }
            | RemoteError::NotFound(_)
            | RemoteError::Cancelled => false,
        }
    }

    /// A short stable code for the failure (replication status' failureCode).
    pub fn code(&self) -> &'static str {
        match self {
            RemoteError::Unreachable { .. } => "UNREACHABLE",
            RemoteError::Tls { .. } => "TLS_UNTRUSTED",
            RemoteError::Unauthorized { .. } => "UNAUTHORIZED",
            RemoteError::Denied { .. } => "ACCESS_DENIED",
            RemoteError::NotFound(_) => "NOT_FOUND",
            RemoteError::TooManyRequests { .. } => "RATE_LIMITED",
            RemoteError::Mismatch(_) => "DIGEST_MISMATCH",
            RemoteError::Protocol { .. } => "REMOTE_ERROR",
            RemoteError::Cancelled => "CANCELLED",
        }
    }
}

/// What a repository's token must allow.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub repository: RepoName,
    pub push: bool,
    /// Another repository of the same registry to read (a mount's source).
    pub mount_from: Option<RepoName>,
}

impl Scope {
    pub fn pull(repository: &RepoName) -> Scope {
        Scope {
            repository: repository.clone(),
            push: false,
            mount_from: None,
        }
    }

    pub fn push(repository: &RepoName) -> Scope {
        Scope {
            repository: repository.clone(),
            push: true,
            mount_from: None,
        }
    }

    fn strings(&self) -> Vec<String> {
        let mut out = vec![ecrl::remote::repository_scope(&self.repository, self.push)];
        if let Some(from) = &self.mount_from {
            out.push(ecrl::remote::repository_scope(from, false));
        }
        out
    }
}

#[derive(Debug, Clone)]
enum Scheme {
    /// Nothing asked for: anonymous access.
    Open,
    Basic,
    Bearer(Challenge),
}

/// A manifest as a registry answered it.
#[derive(Debug, Clone)]
pub struct RemoteManifest {
    pub bytes: Bytes,
    pub media_type: String,
    pub digest: Digest,
}

/// What a manifest HEAD says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// The start of a blob upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadStart {
    /// The registry linked the blob from the other repository: nothing to send.
    Mounted,
    /// A session to send the blob to.
    Session(String),
}

pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, RemoteError>> + Send>>;

/// One remote registry.
pub struct Remote {
    /// The registry as users name it (`docker.io`, `host:port`).
    pub registry: String,
    /// `https://host` or `http://host`.
    base: String,
    http: reqwest::Client,
    credentials: Option<Credentials>,
    scheme: tokio::sync::Mutex<Scheme>,
    tokens: std::sync::Mutex<HashMap<Vec<String>, (String, Instant)>>,
    hint: String,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({})", self.base)
    }
}

/// Whether `host` (`name[:port]`) is this machine: docker allows plain HTTP there.
pub fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Remote {
    /// Reaches `registry` (`/v2/`) and learns how it wants to be spoken to.
    pub async fn connect(
        registry: &str,
        settings: &Settings,
        credentials: Option<Credentials>,
    ) -> Result<Remote, RemoteError> {
        let host = ecrl::remote::api_host(registry).to_string();
        let plain_allowed = settings.insecure || is_loopback(&host);
        let http = client(settings, !settings.insecure)?;
        let mut remote = Remote {
            registry: registry.to_string(),
            base: format!("https://{host}"),
            http,
            credentials,
            scheme: tokio::sync::Mutex::new(Scheme::Open),
            tokens: std::sync::Mutex::new(HashMap::new()),
            hint: settings.ca_hint.clone(),
        };
        match remote.ping().await {
            Ok(()) => Ok(remote),
            Err(https) if plain_allowed => {
                // Not a TLS server: a plain-HTTP registry, if it answers as one. If it does
                // not, the HTTPS failure is what the user needs to hear.
                remote.base = format!("http://{host}");
                match remote.ping().await {
                    Ok(()) => Ok(remote),
                    Err(_) => Err(https),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// `GET /v2/`: the registry answers, and says which authentication it wants.
    async fn ping(&self) -> Result<(), RemoteError> {
        let url = format!("{}/v2/", self.base);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        match response.status() {
            s if s.is_success() => {
                *self.scheme.lock().await = Scheme::Open;
                Ok(())
            }
            StatusCode::UNAUTHORIZED => {
                let scheme = self.challenge(response.headers()).ok_or_else(|| {
                    self.protocol("answers 401 to /v2/ without a challenge ecrl understands")
                })?;
                *self.scheme.lock().await = scheme;
                Ok(())
            }
            status => Err(self.protocol(&format!(
                "answers {status} to /v2/: is it a container registry (OCI distribution API)?"
            ))),
        }
    }

    /// Checks that the credentials are good, as `docker login` does: a token without scope
    /// for the token flow, `/v2/` with them for Basic.
    pub async fn check_login(&self) -> Result<(), RemoteError> {
        let scheme = self.scheme.lock().await.clone();
        match scheme {
            Scheme::Open => Ok(()),
            Scheme::Bearer(challenge) => self.fetch_token(&challenge, &[]).await.map(|_| ()),
            Scheme::Basic => {
                let url = format!("{}/v2/", self.base);
                let request = self.basic(self.http.get(&url))?;
                let response = request.send().await.map_err(|e| self.transport(e))?;
                if response.status().is_success() {
                    Ok(())
                } else {
                    Err(self.unauthorized(&format!("/v2/ answered {}", response.status())))
                }
            }
        }
    }

    fn challenge(&self, headers: &HeaderMap) -> Option<Scheme> {
        let challenges: Vec<Challenge> = headers
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_challenges)
            .collect();
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            if bearer.param("realm").is_some() {
                return Some(Scheme::Bearer(bearer.clone()));
            }
        }
        challenges
            .iter()
            .any(|c| c.scheme == "basic")
            .then_some(Scheme::Basic)
    }

    fn basic(&self, request: RequestBuilder) -> Result<RequestBuilder, RemoteError> {
        match &self.credentials {
            Some(Credentials::Basic { username, password }) => {
                Ok(request.basic_auth(username, Some(password.as_str())))
            }
            Some(Credentials::IdentityToken(_)) => Err(self.unauthorized(
                "it asks for a password, and ecrl holds only an identity token for it",
            )),
            None => Err(self.unauthorized("it needs credentials")),
        }
    }

    fn who(&self) -> String {
        match &self.credentials {
            Some(c) => format!(" of {}", c.username()),
            None => String::new(),
        }
    }

    fn unauthorized(&self, detail: &str) -> RemoteError {
        let detail = if self.credentials.is_none() {
            format!(
                "{detail}; log in first: ecrl login {} -u USER --password-stdin",
                self.registry
            )
        } else {
            detail.to_string()
        };
        RemoteError::Unauthorized {
            registry: self.registry.clone(),
            who: self.who(),
            detail,
        }
    }

    fn protocol(&self, detail: &str) -> RemoteError {
        RemoteError::Protocol {
            registry: self.registry.clone(),
            detail: detail.to_string(),
        }
    }

    /// A transport failure in words: unreachable, or a certificate not trusted.
    fn transport(&self, e: reqwest::Error) -> RemoteError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        let mut tls = None;
        let mut deepest = e.to_string();
        while let Some(err) = source {
            if let Some(r) = err.downcast_ref::<rustls::Error>() {
                tls = Some(r.to_string());
            }
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                if let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                    tls = Some(r.to_string());
                }
            }
            deepest = err.to_string();
            source = err.source();
        }
        // rustls' error may come wrapped in a way the chain does not show; its words do.
        if tls.is_none() && deepest.contains("peer certificate") {
            tls = Some(deepest.clone());
        }
        if let Some(reason) = tls {
            if reason.contains("certificate") || reason.contains("Certificate") {
                return RemoteError::Tls {
                    registry: self.registry.clone(),
                    reason,
                    hint: self.hint.clone(),
                };
            }
            return RemoteError::Unreachable {
                registry: self.registry.clone(),
                reason: format!("TLS: {reason}"),
            };
        }
        let reason = if e.is_timeout() {
            format!("no answer in time ({deepest})")
        } else {
            deepest
        };
        RemoteError::Unreachable {
            registry: self.registry.clone(),
            reason,
        }
    }

    /// A token for `scopes`: the one held while it lasts, else a new one.
    async fn token(&self, challenge: &Challenge, scopes: &[String]) -> Result<String, RemoteError> {
        let key = scopes.to_vec();
        if let Ok(tokens) = self.tokens.lock() {
            if let Some((token, until)) = tokens.get(&key) {
                if Instant::now() < *until {
                    return Ok(token.clone());
                }
            }
        }
        let (token, life) = self.fetch_token(challenge, scopes).await?;
        if let Ok(mut tokens) = self.tokens.lock() {
            // Tokens of long-gone scopes are dropped rather than kept forever.
            if tokens.len() > 256 {
                let now = Instant::now();
                tokens.retain(|_, (_, until)| *until > now);
            }
            let until = Instant::now() + life.saturating_sub(TOKEN_MARGIN);
            tokens.insert(key, (token.clone(), until));
        }
        Ok(token)
    }

    async fn fetch_token(
        &self,
        challenge: &Challenge,
        scopes: &[String],
    ) -> Result<(String, Duration), RemoteError> {
        let url = token_url(challenge, scopes)
            .ok_or_else(|| self.protocol("its token challenge has no http(s) realm"))?;
        // Credentials go to the realm: over plain HTTP only for a registry ecrl already
        // speaks plain HTTP to (insecure, or on this machine).
        if url.starts_with("http://")
            && self.base.starts_with("https://")
            && self.credentials.is_some()
        {
            return Err(self.protocol(&format!(
                "its token endpoint {} is plain HTTP: ecrl does not send credentials there",
                challenge.param("realm").unwrap_or_default()
            )));
        }
        let request = match &self.credentials {
            Some(Credentials::IdentityToken(refresh)) => {
                let mut form = vec![
                    ("grant_type", "refresh_token".to_string()),
                    ("refresh_token", refresh.to_string()),
                    ("client_id", "ecrl".to_string()),
                    (
                        "service",
                        challenge.param("service").unwrap_or_default().to_string(),
                    ),
                ];
                for s in scopes {
                    form.push(("scope", s.clone()));
                }
                let realm = challenge.param("realm").unwrap_or_default();
                self.http.post(realm).form(&form)
            }
            Some(Credentials::Basic { username, password }) => self
                .http
                .get(&url)
                .basic_auth(username, Some(password.as_str())),
            None => self.http.get(&url),
        };
        let response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let body = response.bytes().await.unwrap_or_default();
            return Err(self.unauthorized(&format!(
                "its token endpoint answered {status}{}",
                error_detail(&body)
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            )));
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(self.rate_limited(response.headers()));
        }
        if !status.is_success() {
            return Err(self.protocol(&format!("its token endpoint answered {status}")));
        }
        let body = limited_body(response, 1 << 20)
            .await
            .map_err(|e| self.protocol(&format!("reading a token: {e}")))?;
        let answer = parse_token_answer(&body).map_err(|e| self.protocol(&e))?;
        Ok((answer.token, answer.expires_in))
    }

    fn rate_limited(&self, headers: &HeaderMap) -> RemoteError {
        RemoteError::TooManyRequests {
            registry: self.registry.clone(),
            retry_after: headers
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok()),
        }
    }

    /// Sends a request built by `build` with the authentication `scope` needs; on a 401 it
    /// learns the challenge, authenticates afresh and sends once more (so `build` must be
    /// repeatable: a streamed body is sent only after its session authenticated).
    async fn send(
        &self,
        scope: &Scope,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, RemoteError> {
        let scopes = scope.strings();
        for attempt in 0..2 {
            let scheme = self.scheme.lock().await.clone();
            let request = match &scheme {
                Scheme::Open => build(&self.http),
                Scheme::Basic => self.basic(build(&self.http))?,
                Scheme::Bearer(challenge) => {
                    let token = self.token(challenge, &scopes).await?;
                    build(&self.http).bearer_auth(token)
                }
            };
            let response = request.send().await.map_err(|e| self.transport(e))?;
            match response.status() {
                StatusCode::UNAUTHORIZED if attempt == 0 => {
                    // An expired token, or a registry whose challenge changed: learn it again.
                    if let Some(fresh) = self.challenge(response.headers()) {
                        *self.scheme.lock().await = fresh;
                    }
                    if let Ok(mut tokens) = self.tokens.lock() {
                        tokens.remove(&scopes);
                    }
                }
                StatusCode::UNAUTHORIZED => {
                    let body = response.bytes().await.unwrap_or_default();
                    return Err(self.unauthorized(
                        &error_detail(&body).unwrap_or_else(|| "401 Unauthorized".into()),
                    ));
                }
                StatusCode::FORBIDDEN => {
                    let body = response.bytes().await.unwrap_or_default();
                    return Err(RemoteError::Denied {
                        registry: self.registry.clone(),
                        detail: error_detail(&body).unwrap_or_else(|| {
                            format!(
                                "403 Forbidden for {}{}",
                                scope.repository,
                                if scope.push { " (push)" } else { "" }
                            )
                        }),
                    });
                }
                StatusCode::TOO_MANY_REQUESTS => return Err(self.rate_limited(response.headers())),
                _ => return Ok(response),
            }
        }
        Err(self.unauthorized("401 Unauthorized"))
    }

    fn url(&self, repo: &RepoName, rest: &str) -> String {
        format!("{}/v2/{repo}/{rest}", self.base)
    }

    /// An upload session's URL as the registry gave it (often relative) made absolute.
    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            format!("{}/{location}", self.base)
        }
    }

    /// An answer that is not what the protocol says, in words.
    async fn unexpected(&self, what: &str, response: Response) -> RemoteError {
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        let detail = error_detail(&body).unwrap_or_default();
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!(": {detail}")
        };
        self.protocol(&format!("{what} answered {status}{detail}"))
    }

    /// `HEAD` a manifest: its digest, media type and size; `None` when it is not there.
    pub async fn manifest_head(
        &self,
        repo: &RepoName,
        reference: &str,
    ) -> Result<Option<ManifestHead>, RemoteError> {
        let url = self.url(repo, &format!("manifests/{reference}"));
        let response = self
            .send(&Scope::pull(repo), |c| {
                c.head(&url).header(header::ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let headers = response.headers();
                let digest = headers
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<Digest>().ok());
                let media_type = content_type(headers);
                let size = headers
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                match (digest, size) {
                    (Some(digest), Some(size)) => Ok(Some(ManifestHead {
                        digest,
                        media_type,
                        size,
                    })),
                    // Some registries leave the digest out of a HEAD: read the manifest.
                    _ => {
                        let m = self.manifest(repo, reference).await?;
                        Ok(Some(ManifestHead {
                            digest: m.digest,
                            media_type: m.media_type,
                            size: m.bytes.len() as u64,
                        }))
                    }
                }
            }
            _ => Err(self
                .unexpected(&format!("a HEAD of manifest {repo}:{reference}"), response)
                .await),
        }
    }

    /// `GET` a manifest (at most 4 MiB). Its digest is computed from the bytes; when
    /// `reference` is a digest, the bytes must have it.
    pub async fn manifest(
        &self,
        repo: &RepoName,
        reference: &str,
    ) -> Result<RemoteManifest, RemoteError> {
        let url = self.url(repo, &format!("manifests/{reference}"));
        let response = self
            .send(&Scope::pull(repo), |c| {
                c.get(&url).header(header::ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Err(RemoteError::NotFound(format!(
                "{}/{repo} has no manifest {reference}",
                self.registry
            )));
        }
        if !response.status().is_success() {
            return Err(self
                .unexpected(&format!("a GET of manifest {repo}:{reference}"), response)
                .await);
        }
        let media_type = content_type(response.headers());
        let bytes = limited_body(response, MAX_MANIFEST)
            .await
            .map_err(|e| self.protocol(&format!("manifest {repo}:{reference}: {e}")))?;
        let digest = Digest::from_bytes(sha2::Sha256::digest(&bytes).into());
        if let Ok(wanted) = reference.parse::<Digest>() {
            if wanted != digest {
                return Err(RemoteError::Mismatch(format!(
                    "{}/{repo} answered manifest {wanted} with content whose digest is \
                     {digest}: nothing was stored",
                    self.registry
                )));
            }
        }
        // The media type the document names wins over a generic Content-Type.
        // A generic Content-Type (`application/json`) leaves the document to say what it is.
        let header = ecrl::manifest::kind_of(&media_type).map(|_| media_type.as_str());
        let media_type = match ecrl::manifest::parse(header, &bytes) {
            Ok((_, settled, _)) => settled,
            Err(e) => {
                return Err(self.protocol(&format!(
                    "manifest {repo}:{reference} is not one ecrl copies ({e})"
                )))
            }
        };
        Ok(RemoteManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// `PUT` a manifest under a tag or its digest.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<(), RemoteError> {
        let url = self.url(repo, &format!("manifests/{reference}"));
        let response = self
            .send(&Scope::push(repo), |c| {
                c.put(&url)
                    .header(header::CONTENT_TYPE, media_type)
                    .body(bytes.clone())
            })
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(self
                .unexpected(&format!("a PUT of manifest {repo}:{reference}"), response)
                .await)
        }
    }

    /// `HEAD` a blob: its size, or `None` when the repository does not have it.
    pub async fn blob_size(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>, RemoteError> {
        let url = self.url(repo, &format!("blobs/{digest}"));
        let response = self.send(&Scope::pull(repo), |c| c.head(&url)).await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(response
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())),
            _ => Err(self
                .unexpected(&format!("a HEAD of blob {digest} in {repo}"), response)
                .await),
        }
    }

    /// `GET` a blob from byte `from` on, following redirects (registries on object storage
    /// answer 307 to a signed URL). The bytes are not checked here.
    pub async fn blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: u64,
    ) -> Result<ByteStream, RemoteError> {
        let url = self.url(repo, &format!("blobs/{digest}"));
        let response = self
            .send(&Scope::pull(repo), |c| {
                let r = c.get(&url);
                if from > 0 {
                    r.header(header::RANGE, format!("bytes={from}-"))
                } else {
                    r
                }
            })
            .await?;
        let skip = match response.status() {
            StatusCode::NOT_FOUND => {
                return Err(RemoteError::NotFound(format!(
                    "{}/{repo} has no blob {digest}",
                    self.registry
                )))
            }
            StatusCode::PARTIAL_CONTENT => 0,
            // A registry that ignores the range sends it all: what is had is skipped.
            StatusCode::OK => from,
            _ => {
                return Err(self
                    .unexpected(&format!("a GET of blob {digest} in {repo}"), response)
                    .await)
            }
        };
        let registry = self.registry.clone();
        let mut skip = skip;
        let stream = response.bytes_stream().filter_map(move |chunk| {
            let out = match chunk {
                Ok(mut chunk) => {
                    if skip > 0 {
                        let n = skip.min(chunk.len() as u64);
                        skip -= n;
                        let _ = chunk.split_to(n as usize);
                    }
                    (!chunk.is_empty()).then_some(Ok(chunk))
                }
                Err(e) => Some(Err(RemoteError::Unreachable {
                    registry: registry.clone(),
                    reason: format!("the blob broke off: {e}"),
                })),
            };
            std::future::ready(out)
        });
        Ok(Box::pin(stream))
    }

    /// `POST` an upload: a mount from `mount_from` when given (the registry may decline and
    /// open a session instead).
    pub async fn upload_start(
        &self,
        repo: &RepoName,
        mount: Option<(&Digest, &RepoName)>,
    ) -> Result<UploadStart, RemoteError> {
        let mut url = self.url(repo, "blobs/uploads/");
        let mut scope = Scope::push(repo);
        if let Some((digest, from)) = mount {
            url.push_str(&format!("?mount={digest}&from={from}"));
            scope.mount_from = Some(from.clone());
        }
        let response = self.send(&scope, |c| c.post(&url)).await?;
        match response.status() {
            StatusCode::CREATED if mount.is_some() => Ok(UploadStart::Mounted),
            StatusCode::ACCEPTED => {
                let location = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| self.protocol("an upload session came without a Location"))?;
                Ok(UploadStart::Session(self.absolute(location)))
            }
            _ => Err(self
                .unexpected(&format!("starting an upload to {repo}"), response)
                .await),
        }
    }

    /// How many bytes an upload session holds; `None` when the session is gone.
    pub async fn upload_status(
        &self,
        repo: &RepoName,
        location: &str,
    ) -> Result<Option<u64>, RemoteError> {
        let response = self.send(&Scope::push(repo), |c| c.get(location)).await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::NO_CONTENT | StatusCode::OK => {
                let range = response
                    .headers()
                    .get(header::RANGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("0-0");
                // `0-N` holds N+1 bytes; `0-0` is sent for an empty session too, and a
                // session that lies about its size is caught by the final digest check.
                let end = range
                    .trim_start_matches("bytes=")
                    .split_once('-')
                    .and_then(|(_, end)| end.parse::<u64>().ok())
                    .unwrap_or(0);
                Ok(Some(if end == 0 { 0 } else { end + 1 }))
            }
            _ => Err(self
                .unexpected(&format!("an upload session of {repo}"), response)
                .await),
        }
    }

    /// `PATCH`es a stream into a session from `offset` on; returns the session's next URL.
    pub async fn upload_chunk(
        &self,
        repo: &RepoName,
        location: &str,
        offset: u64,
        length: Option<u64>,
        body: reqwest::Body,
    ) -> Result<String, RemoteError> {
        // The body can be sent once: the session is authenticated first (status), so a
        // 401 here is the end, not a retry.
        let body = std::sync::Mutex::new(Some(body));
        let response = self
            .send(&Scope::push(repo), |c| {
                let mut r = c
                    .patch(location)
                    .header(header::CONTENT_TYPE, "application/octet-stream");
                if let Some(len) = length.filter(|l| *l > 0) {
                    r = r
                        .header(
                            header::CONTENT_RANGE,
                            format!("{offset}-{}", offset + len - 1),
                        )
                        .header(header::CONTENT_LENGTH, len);
                } else if offset > 0 {
                    r = r.header(header::CONTENT_RANGE, format!("{offset}-"));
                }
                match body.lock().ok().and_then(|mut b| b.take()) {
                    Some(b) => r.body(b),
                    None => r,
                }
            })
            .await?;
        match response.status() {
            StatusCode::ACCEPTED | StatusCode::NO_CONTENT | StatusCode::CREATED => Ok(response
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(|l| self.absolute(l))
                .unwrap_or_else(|| location.to_string())),
            _ => Err(self
                .unexpected(&format!("sending a blob to {repo}"), response)
                .await),
        }
    }

    /// Completes a session with `PUT ?digest=`, with the last bytes as the body (all of a
    /// small blob: a monolithic upload).
    pub async fn upload_finish(
        &self,
        repo: &RepoName,
        location: &str,
        digest: &Digest,
        body: Option<(Bytes, u64)>,
    ) -> Result<(), RemoteError> {
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={digest}");
        let response = self
            .send(&Scope::push(repo), |c| {
                let r = c.put(&url);
                match &body {
                    Some((bytes, offset)) if !bytes.is_empty() => r
                        .header(header::CONTENT_TYPE, "application/octet-stream")
                        .header(
                            header::CONTENT_RANGE,
                            format!("{offset}-{}", offset + bytes.len() as u64 - 1),
                        )
                        .body(bytes.clone()),
                    _ => r.header(header::CONTENT_LENGTH, 0),
                }
            })
            .await?;
        match response.status() {
            StatusCode::CREATED | StatusCode::NO_CONTENT | StatusCode::OK => Ok(()),
            StatusCode::BAD_REQUEST => {
                let body = response.bytes().await.unwrap_or_default();
                let detail = error_detail(&body).unwrap_or_default();
                if detail.to_ascii_lowercase().contains("digest") {
                    Err(RemoteError::Mismatch(format!(
                        "{} refused blob {digest}: {detail}",
                        self.registry
                    )))
                } else {
                    Err(self.protocol(&format!("completing blob {digest}: {detail}")))
                }
            }
            _ => Err(self
                .unexpected(&format!("completing blob {digest} in {repo}"), response)
                .await),
        }
    }

    /// A repository's tags, every page of them.
    pub async fn tags(&self, repo: &RepoName) -> Result<Vec<String>, RemoteError> {
        let mut url = self.url(repo, "tags/list?n=1000");
        let mut tags = Vec::new();
        for _ in 0..10_000 {
            let response = self.send(&Scope::pull(repo), |c| c.get(&url)).await?;
            if response.status() == StatusCode::NOT_FOUND {
                return Err(RemoteError::NotFound(format!(
                    "{}/{repo} does not exist",
                    self.registry
                )));
            }
            if !response.status().is_success() {
                return Err(self
                    .unexpected(&format!("listing the tags of {repo}"), response)
                    .await);
            }
            let next = next_link(response.headers()).map(|l| self.absolute(&l));
            #[derive(serde::Deserialize)]
            struct Page {
                #[serde(default)]
                tags: Option<Vec<String>>,
            }
            let body = limited_body(response, 16 << 20)
                .await
                .map_err(|e| self.protocol(&format!("the tags of {repo}: {e}")))?;
            let page: Page = serde_json::from_slice(&body)
                .map_err(|e| self.protocol(&format!("the tags of {repo}: {e}")))?;
            tags.extend(page.tags.unwrap_or_default());
            match next {
                Some(n) if n != url => url = n,
                _ => return Ok(tags),
            }
        }
        Ok(tags)
    }

    /// The manifests that name `digest` as their subject: the referrers API, else the tag
    /// schema (`sha256-HEX`) registries without it use.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Vec<ecrl::manifest::Descriptor>, RemoteError> {
        let url = self.url(repo, &format!("referrers/{digest}"));
        let response = self
            .send(&Scope::pull(repo), |c| {
                c.get(&url).header(header::ACCEPT, OCI_INDEX)
            })
            .await?;
        let bytes = if response.status().is_success()
            && content_type(response.headers()).starts_with(OCI_INDEX)
        {
            limited_body(response, MAX_MANIFEST)
                .await
                .map_err(|e| self.protocol(&format!("referrers of {digest}: {e}")))?
        } else if matches!(
            response.status(),
            StatusCode::NOT_FOUND | StatusCode::OK | StatusCode::METHOD_NOT_ALLOWED
        ) {
            let tag = digest.to_string().replace(':', "-");
            match self.manifest(repo, &tag).await {
                Ok(m) => m.bytes,
                Err(RemoteError::NotFound(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e),
            }
        } else {
            return Err(self
                .unexpected(&format!("the referrers of {digest}"), response)
                .await);
        };
        let doc: ecrl::manifest::Doc = serde_json::from_slice(&bytes)
            .map_err(|e| self.protocol(&format!("referrers of {digest}: {e}")))?;
        Ok(doc.manifests.unwrap_or_default())
    }
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
        .unwrap_or_default()
}

/// The `rel="next"` target of a `Link` header.
fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = headers.get(header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

/// The `message` of a registry's `{"errors": [...]}` answer.
fn error_detail(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Error>,
    }
    #[derive(serde::Deserialize)]
    struct Error {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let e: Errors = serde_json::from_slice(body).ok()?;
    let parts: Vec<String> = e
        .errors
        .into_iter()
        .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
            (false, false) => format!("{}: {}", e.code, e.message),
            (false, true) => e.code,
            _ => e.message,
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// A response body of at most `max` bytes.
async fn limited_body(response: Response, max: usize) -> Result<Bytes, String> {
    if response
        .content_length()
        .is_some_and(|len| len > max as u64)
    {
        return Err(format!("the answer is over {max} bytes"));
    }
    let mut out = bytes::BytesMut::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        if out.len() + chunk.len() > max {
            return Err(format!("the answer is over {max} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The HTTP client for one registry's settings.
fn client(settings: &Settings, verify: bool) -> Result<reqwest::Client, RemoteError> {
    let fail = |e: String| RemoteError::Protocol {
        registry: "ecrld".into(),
        detail: e,
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?;
    let mut config = if verify {
        let roots = crate::tls::client_roots(&settings.ca_files).map_err(fail)?;
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
            .with_no_client_auth()
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .user_agent(concat!("ecrl/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(5))
        .http2_adaptive_window(true)
        .build()
        .map_err(|e| fail(format!("building the HTTP client: {e}")))
}

/// An insecure registry's certificate: accepted whatever it is (signatures still checked,
/// so the connection is at least to the holder of the key it shows).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A blob's bytes checked as they pass: the stream fails at its end (before the consumer
/// completes anything) when the bytes are not `size` long or do not hash to `digest`.
pub struct Verified<S> {
    inner: S,
    digest: Digest,
    size: u64,
    seen: u64,
    hasher: Option<sha2::Sha256>,
    what: String,
    /// The digest is checked (else the length only).
    whole: bool,
}

impl<S> Verified<S> {
    /// Checks the length only (`size` bytes from here on): for bytes whose digest the
    /// destination checks itself.
    pub fn length(inner: S, digest: Digest, size: u64, what: String) -> Self {
        Verified {
            inner,
            digest,
            size,
            seen: 0,
            hasher: None,
            what,
            whole: false,
        }
    }

    /// `what` names the source in the error (`reg.example/team/app`).
    pub fn new(inner: S, digest: Digest, size: u64, what: String) -> Self {
        Verified {
            inner,
            digest,
            size,
            seen: 0,
            hasher: Some(sha2::Sha256::new()),
            what,
            whole: true,
        }
    }
}

impl<S> Stream for Verified<S>
where
    S: Stream<Item = Result<Bytes, RemoteError>> + Unpin,
{
    type Item = Result<Bytes, RemoteError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.seen += chunk.len() as u64;
                if this.seen > this.size {
                    let error = RemoteError::Mismatch(format!(
                        "{} sent more than the {} bytes of blob {}: nothing was stored",
                        this.what, this.size, this.digest
                    ));
                    // Reported once; what may follow is not checked again.
                    this.hasher = None;
                    this.whole = false;
                    this.size = u64::MAX;
                    return Poll::Ready(Some(Err(error)));
                }
                if let Some(h) = this.hasher.as_mut() {
                    h.update(&chunk);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) if !this.whole => {
                if this.seen < this.size {
                    this.size = this.seen;
                    return Poll::Ready(Some(Err(RemoteError::Unreachable {
                        registry: this.what.clone(),
                        reason: format!("blob {} ended early", this.digest),
                    })));
                }
                Poll::Ready(None)
            }
            Poll::Ready(None) => {
                let Some(hasher) = this.hasher.take() else {
                    return Poll::Ready(None);
                };
                let actual = Digest::from_bytes(hasher.finalize().into());
                if this.seen != this.size || actual != this.digest {
                    return Poll::Ready(Some(Err(RemoteError::Mismatch(format!(
                        "{} sent blob {} as {} bytes whose digest is {actual} (expected {} \
                         bytes): nothing was stored",
                        this.what, this.digest, this.seen, this.size
                    )))));
                }
                Poll::Ready(None)
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn loopback_hosts_are_known() {
        for host in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:80",
            "[::1]:5000",
            "127.3.4.5",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "example.com",
            "10.0.0.1:5000",
            "[2001:db8::1]:5000",
            "localhost.example",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn next_links_are_read() {
        let mut h = HeaderMap::new();
        h.insert(
            header::LINK,
            HeaderValue::from_static("</v2/a/tags/list?n=2&last=b>; rel=\"next\""),
        );
        assert_eq!(next_link(&h).as_deref(), Some("/v2/a/tags/list?n=2&last=b"));
        assert_eq!(next_link(&HeaderMap::new()), None);
    }

    #[test]
    fn registry_errors_are_read() {
        let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
        assert_eq!(
            error_detail(body).as_deref(),
            Some("UNAUTHORIZED: authentication required")
        );
        assert_eq!(error_detail(b"<html>"), None);
    }

    fn stream_of(
        chunks: &[&'static [u8]],
    ) -> impl Stream<Item = Result<Bytes, RemoteError>> + Unpin {
        futures_util::stream::iter(
            chunks
                .iter()
                .map(|c| Ok(Bytes::from_static(c)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn verified_streams_fail_on_other_bytes() {
        let data = b"hello world";
        let digest = Digest::from_bytes(sha2::Sha256::digest(data).into());
        let good = Verified::new(stream_of(&[b"hello ", b"world"]), digest, 11, "x".into());
        let got: Vec<_> = good.collect().await;
        assert!(got.iter().all(|c| c.is_ok()));
        let bad = Verified::new(stream_of(&[b"hello ", b"World"]), digest, 11, "x".into());
        let got: Vec<_> = bad.collect().await;
        assert!(matches!(got.last(), Some(Err(RemoteError::Mismatch(_)))));
        let long = Verified::new(stream_of(&[b"hello world!"]), digest, 11, "x".into());
        let got: Vec<_> = long.collect().await;
        assert!(matches!(got.first(), Some(Err(RemoteError::Mismatch(_)))));
        let short = Verified::new(stream_of(&[b"hello"]), digest, 11, "x".into());
        let got: Vec<_> = short.collect().await;
        assert!(matches!(got.last(), Some(Err(RemoteError::Mismatch(_)))));
    }
}
