//! The server loop: accepts TCP connections and serves HTTP/1.1 and HTTP/2 on them with hyper,
//! so that slow, idle or numerous clients cannot hold the server's connections (slowloris).
//!
//! Every connection has a watchdog that knows whether a request is in progress:
//! - a request head (request line and headers) must be complete within `header_read`,
//!   counted from the connection's start, or on a kept-alive connection from the first byte
//!   of the next request;
//! - a kept-alive connection waiting for its next request is closed after `idle`;
//! - while a request is in progress neither applies: a multi-gigabyte upload that streams
//!   slowly but steadily, or a long download, is never cut.
//!
//! At most `max_connections` connections are open. When all are taken, the connection that
//! has waited longest without a request in progress (a half-open slowloris request, an idle
//! keep-alive) is closed to make room, so a real client's new connection is served at once.
//! Only when every connection has a request in progress do new ones wait in the listen queue.
//!
//! hyper's own timers are not used: its header timeout also counts the time a kept-alive
//! connection waits for the next request, and neither HTTP/2 nor the protocol sniffing of
//! hyper-util's auto builder has one. One watchdog gives both protocols the same rules.

mod io;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use self::io::TrackedIo;

/// How long a client may take, and how many connections may be open.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub header_read: Duration,
    pub idle: Duration,
    pub max_connections: usize,
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `shutdown` completes, then
/// stops accepting, closes idle connections and lets requests in progress finish for at most
/// `drain`; whatever is still running then is cut (an upload cut that way stays resumable from
/// its last completed chunk: session state lives in the database).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let connections = Arc::new(Connections::new(limits.max_connections));
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    // Dropped to tell every connection to finish.
    let (stop, stopped) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = accept(&listener, &connections) => accepted,
        };
        let state = connections.open();
        let connection = Connection {
            remote,
            app: app.clone(),
            builder: builder.clone(),
            connections: connections.clone(),
            state,
            limits,
            stopped: stopped.clone(),
        };
        match &tls {
            None => tokio::spawn(connection.serve(stream)),
            Some(tls) => tokio::spawn(connection.serve_tls(stream, tls.clone())),
        };
    }
    drop(listener);
    drop(stop);
    if tokio::time::timeout(drain, connections.all_closed()).await.is_err() {
        tracing::warn!(
            connections = connections.table().len(),
            "http.draintimeout passed with requests still in progress: stopping anyway \
             (interrupted uploads resume from their last completed chunk)"
        );
    }
}

/// Loads `http.tls`: the certificate chain and private key (PEM), for HTTP/2 and HTTP/1.1.
pub fn tls_acceptor(
    certificate: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<TlsAcceptor> {
    use anyhow::Context;
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(certificate)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!(
                "http.tls.certificate: cannot read PEM certificates from {}",
                certificate.display()
            )
        })?;
    if chain.is_empty() {
        anyhow::bail!(
            "http.tls.certificate: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            certificate.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!("http.tls.key: cannot read a PEM private key from {}", key.display())
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("http.tls.key does not match http.tls.certificate, or is not a usable key")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Raises the soft limit on open files to the hard limit (as Go's runtime does), since every
/// connection is one; warns when `max_connections` would not fit even so.
pub fn raise_open_file_limit(max_connections: usize) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let mut current = limit.current;
    if let (Some(soft), Some(hard)) = (limit.current, limit.maximum) {
        if soft < hard
            && setrlimit(Resource::Nofile, Rlimit { current: Some(hard), ..limit }).is_ok()
        {
            current = Some(hard);
        }
    }
    // Database connections, blob files and the listener need descriptors too.
    let needed = max_connections as u64 + 256;
    if let Some(current) = current.filter(|&c| c < needed) {
        tracing::warn!(
            open_file_limit = current,
            "http.max_connections is {max_connections} but this process may open only {current} \
             files: lower http.max_connections or raise the limit (ulimit -n, LimitNOFILE)"
        );
    }
}

async fn accept(listener: &TcpListener, connections: &Connections) -> (TcpStream, SocketAddr) {
    loop {
        connections.room_or_idle().await;
        match listener.accept().await {
            Ok((stream, remote)) => {
                if connections.full() {
                    connections.close_longest_waiting();
                    connections.warn_full();
                }
                // Small answers (tokens, manifests, errors) go out at once.
                let _ = stream.set_nodelay(true);
                return (stream, remote);
            }
            // The client gave up before we accepted: nothing to do.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => {
                // Out of file descriptors and the like: free a connection, then try again.
                tracing::warn!(error = %e, "cannot accept a connection");
                connections.close_longest_waiting();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One accepted connection and what serving it needs.
struct Connection {
    remote: SocketAddr,
    app: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    connections: Arc<Connections>,
    state: Arc<ConnectionState>,
    limits: ConnectionLimits,
    stopped: watch::Receiver<()>,
}

impl Connection {
    async fn serve(self, stream: TcpStream) {
        serve_connection(stream, self).await
    }

    /// The TLS handshake counts as part of the first request head: it must be done within
    /// `header_read`, so a client that opens connections and never shakes hands holds none.
    async fn serve_tls(self, stream: TcpStream, tls: TlsAcceptor) {
        match tokio::time::timeout(self.limits.header_read, tls.accept(stream)).await {
            Ok(Ok(stream)) => serve_connection(stream, self).await,
            Ok(Err(e)) => {
                tracing::debug!(remote = %self.remote, error = %e, "TLS handshake failed");
                self.connections.close(self.state.id);
            }
            Err(_) => {
                tracing::debug!(remote = %self.remote, "TLS handshake not done in time");
                self.connections.close(self.state.id);
            }
        }
    }
}

async fn serve_connection<S>(stream: S, connection: Connection)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Connection { remote, app, builder, connections, state, limits, mut stopped } = connection;
    let io = TokioIo::new(TrackedIo::new(stream, state.clone()));
    let service = {
        let state = state.clone();
        let connections = connections.clone();
        hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            // Handlers read the client address as axum's `ConnectInfo`.
            request.extensions_mut().insert(ConnectInfo(remote));
            let in_progress = RequestInProgress::start(state.clone(), connections.clone());
            let response = app.clone().oneshot(request.map(Body::new));
            async move {
                let response = response.await.unwrap_or_else(|never| match never {});
                // The request stays in progress until its response body has been sent.
                Ok::<_, Infallible>(
                    response.map(|body| Body::new(TrackedBody { body, _in_progress: in_progress })),
                )
            }
        })
    };
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut stopping = false;
    loop {
        let deadline = state.deadline(&limits);
        let expired = async move {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%remote, error = %e, "connection ended with an error");
                }
                break;
            }
            _ = state.changed.notified() => {
                if state.evicted.load(Ordering::Acquire) {
                    tracing::debug!(%remote, "closed an idle connection to make room");
                    break;
                }
            }
            _ = expired => {
                if state.deadline(&limits).is_some_and(|at| at <= Instant::now()) {
                    tracing::debug!(%remote, "closed a connection that sent no complete request in time");
                    break;
                }
            }
            _ = stopped.changed(), if !stopping => {
                // Requests in progress finish; idle connections close now.
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
    connections.close(state.id);
}

/// The open connections, for the cap and for shutdown.
struct Connections {
    epoch: Instant,
    max: usize,
    open: Mutex<HashMap<u64, Arc<ConnectionState>>>,
    next_id: AtomicU64,
    /// A connection closed or became idle.
    room: Notify,
    /// When the cap was last logged (ms since `epoch`), so a flood logs once a minute.
    last_full_warning: AtomicU64,
}

impl Connections {
    fn new(max: usize) -> Connections {
        Connections {
            epoch: Instant::now(),
            max,
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            room: Notify::new(),
            last_full_warning: AtomicU64::new(u64::MAX),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnectionState>>> {
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn open(&self) -> Arc<ConnectionState> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnectionState::new(id, self.epoch));
        self.table().insert(id, state.clone());
        state
    }

    fn close(&self, id: u64) {
        self.table().remove(&id);
        self.room.notify_waiters();
    }

    fn full(&self) -> bool {
        self.table().len() >= self.max
    }

    /// Returns once a new connection may be accepted: below the cap, or some connection is
    /// idle and can be closed to make room.
    async fn room_or_idle(&self) {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let open = self.table();
                if open.len() < self.max || open.values().any(|c| c.closable()) {
                    return;
                }
            }
            room.await;
        }
    }

    /// Closes the connection that has waited longest without a request in progress.
    fn close_longest_waiting(&self) {
        let victim = self
            .table()
            .values()
            .filter(|c| c.closable())
            .min_by_key(|c| (c.waiting_since.load(Ordering::Acquire), c.id))
            .cloned();
        if let Some(victim) = victim {
            victim.evicted.store(true, Ordering::Release);
            victim.changed.notify_one();
        }
    }

    /// Says that the cap was reached, once a minute at most.
    fn warn_full(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.last_full_warning.load(Ordering::Relaxed);
        if last == u64::MAX || now.saturating_sub(last) >= 60_000 {
            self.last_full_warning.store(now, Ordering::Relaxed);
            tracing::warn!(
                max_connections = self.max,
                "connection limit reached (http.max_connections): closing the connections \
                 that have waited longest without a request to make room"
            );
        }
    }

    async fn all_closed(&self) {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.table().is_empty() {
                return;
            }
            room.await;
        }
    }
}

const NOT_STARTED: u64 = u64::MAX;

/// What the watchdog, the byte stream and the service share about one connection. Times are
/// milliseconds since the server's epoch.
pub struct ConnectionState {
    id: u64,
    epoch: Instant,
    requests_started: AtomicU64,
    responses_finished: AtomicU64,
    /// When the connection last became idle (opened, or its last response finished).
    waiting_since: AtomicU64,
    /// When the first byte of the next request head arrived while idle.
    head_started: AtomicU64,
    evicted: AtomicBool,
    /// Wakes the watchdog: a request started or finished, a head began, or eviction.
    changed: Notify,
}

impl ConnectionState {
    fn new(id: u64, epoch: Instant) -> ConnectionState {
        ConnectionState {
            id,
            epoch,
            requests_started: AtomicU64::new(0),
            responses_finished: AtomicU64::new(0),
            waiting_since: AtomicU64::new(epoch.elapsed().as_millis() as u64),
            head_started: AtomicU64::new(NOT_STARTED),
            evicted: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    pub fn requests_started(&self) -> u64 {
        self.requests_started.load(Ordering::Acquire)
    }

    pub fn responses_finished(&self) -> u64 {
        self.responses_finished.load(Ordering::Acquire)
    }

    fn idle(&self) -> bool {
        self.responses_finished() == self.requests_started()
    }

    fn closable(&self) -> bool {
        self.idle() && !self.evicted.load(Ordering::Acquire)
    }

    /// Bytes arrived: while idle, they begin a request head, which now has `header_read`.
    pub fn bytes_received(&self) {
        if self.idle()
            && self.head_started.load(Ordering::Relaxed) == NOT_STARTED
            && self
                .head_started
                .compare_exchange(NOT_STARTED, self.now(), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.changed.notify_one();
        }
    }

    /// When the connection is to be closed unless something happens; `None` while a request
    /// is in progress.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        if !self.idle() {
            return None;
        }
        let waiting_since = self.at(self.waiting_since.load(Ordering::Acquire));
        if self.requests_started() == 0 {
            // The first request's head: from the connection's start, however it trickles in.
            return Some(waiting_since + limits.header_read);
        }
        match self.head_started.load(Ordering::Acquire) {
            NOT_STARTED => Some(waiting_since + limits.idle),
            started => Some(self.at(started) + limits.header_read),
        }
    }
}

/// One request handed to the application, until its response has been sent (or dropped).
struct RequestInProgress {
    state: Arc<ConnectionState>,
    connections: Arc<Connections>,
}

impl RequestInProgress {
    fn start(state: Arc<ConnectionState>, connections: Arc<Connections>) -> RequestInProgress {
        state.requests_started.fetch_add(1, Ordering::AcqRel);
        state.head_started.store(NOT_STARTED, Ordering::Release);
        state.changed.notify_one();
        RequestInProgress { state, connections }
    }
}

impl Drop for RequestInProgress {
    fn drop(&mut self) {
        let state = &self.state;
        state.waiting_since.store(state.now(), Ordering::Release);
        state.head_started.store(NOT_STARTED, Ordering::Release);
        let finished = state.responses_finished.fetch_add(1, Ordering::AcqRel) + 1;
        state.changed.notify_one();
        if finished == state.requests_started() {
            self.connections.room.notify_waiters();
        }
    }
}

/// A response body that keeps its request in progress until hyper has taken its last frame.
struct TrackedBody {
    body: Body,
    _in_progress: RequestInProgress,
}

impl http_body::Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
