//! The web UI: server-rendered HTML pages at GitLab's URLs — explore (`/`), sign-in and
//! sign-out (`/users/sign_in`, `/users/sign_out`), a project's container registry
//! (`/<project>/container_registry`) and an image's tag details
//! (`/<project>/container_registry/<repository id>`), a project's settings
//! (`/<project>/-/settings/packages_and_registries`, [`settings`]) and the viewer's personal
//! access tokens (`/-/user_settings/personal_access_tokens`, [`tokens`]).
//!
//! A page is a thin surface like the REST API: it parses its input once, asks the access
//! policy (`auth::policy`) what the viewer may see and do, reads through the same `meta`
//! queries, and changes registry state only through the write service (`service`), so a page
//! shows and allows exactly what the API would. It owns no SQL and no access rule.
//!
//! Viewers sign in with a username and password checked by `auth::web::check_login` (the
//! accounts and throttle of `/jwt/auth`); the session lives in the metadata database
//! ([`session`]) and every form carries the session's synchronizer token. Templates are
//! askama's (checked at compile time, HTML-escaped by default); the one stylesheet and the
//! small script are compiled into the binary. Every page reads without JavaScript.

mod error;
mod format;
mod pages;
pub mod session;
mod settings;
mod tokens;

use std::time::Duration;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

pub use error::PageError;

/// What the pages need.
#[derive(Clone)]
pub struct WebState {
    /// Accounts, the login check and its throttle: shared with `/jwt/auth`.
    pub auth: auth::web::AuthState,
    /// Every change of registry state goes through it.
    pub writes: service::WriteService,
    /// The durable job queue repository deletes are queued on (as the REST API queues them).
    pub jobs: jobs::Queue,
    /// Whether session cookies carry `Secure`: when the registry is reached over HTTPS
    /// (`http.tls`, or `http.host` an `https://` URL behind a TLS-terminating proxy).
    pub secure_cookies: bool,
    /// How long a sign-in lasts.
    pub session_lifetime: Duration,
}

impl WebState {
    pub(crate) fn store(&self) -> &meta::Store {
        &self.auth.store
    }
}

/// How long a sign-in lasts unless the binary says otherwise.
pub const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The page routes, top to bottom. Everything else — a group or project path and the pages
/// below it (`/<path>/container_registry`, `/<path>/container_registry/<id>`) — is resolved by
/// [`pages::by_path`]. The binary calls this router only for paths no other surface owns.
pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/", get(pages::explore))
        .route("/users/sign_in", get(pages::sign_in_form).post(pages::sign_in))
        .route("/users/sign_out", get(pages::sign_out_form).post(pages::sign_out))
        .route(tokens::PATH, get(tokens::show).post(tokens::submit))
        .route("/-/assets/style.css", get(stylesheet))
        .route("/-/assets/app.js", get(script))
        .fallback(pages::by_path)
        .with_state(state)
}

const STYLE_CSS: &str = include_str!("../assets/style.css");
const APP_JS: &str = include_str!("../assets/app.js");

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        STYLE_CSS,
    )
}

async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        APP_JS,
    )
}
