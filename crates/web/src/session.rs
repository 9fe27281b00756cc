//! Sign-in sessions and CSRF protection.
//!
//! A session is a random 256-bit id in the `_stowage_session` cookie (HttpOnly,
//! SameSite=Lax, `Secure` when the registry is reached over HTTPS). The database keeps only
//! its SHA-256 (`web_sessions`), so every instance recognises it and sign-out or blocking the
//! user ends it everywhere at once: the row is read, and the user re-checked, on every request.
//!
//! Every form of a signed-in page carries the session's synchronizer token
//! (`authenticity_token`, as in GitLab) and every POST is refused unless it sends that token
//! back. The sign-in form, which has no session yet, is protected by a double-submit token
//! instead: a random value in a SameSite=Strict cookie that the form must repeat.

use axum::http::{HeaderMap, HeaderValue};
use rand::RngCore;

use auth::secret::{hashes_equal, token_hash};

use crate::{PageError, WebState};

pub const SESSION_COOKIE: &str = "_stowage_session";
pub const LOGIN_CSRF_COOKIE: &str = "_stowage_login_csrf";
/// The form field every POST carries its CSRF token in.
pub const CSRF_FIELD: &str = "authenticity_token";

/// Who is looking at a page.
#[derive(Clone, Debug, Default)]
pub struct Viewer {
    pub user: Option<meta::User>,
    session: Option<meta::WebSession>,
}

impl Viewer {
    /// The identity the access policy judges: the user as if by password, or nobody.
    pub fn identity(&self) -> auth::Identity {
        match &self.user {
            Some(user) => auth::Identity::User { user: user.clone(), pat: None },
            None => auth::Identity::Anonymous,
        }
    }

    /// The token this viewer's forms carry (empty when signed out: such forms are refused).
    pub fn csrf_token(&self) -> &str {
        self.session.as_ref().map(|s| s.csrf_token.as_str()).unwrap_or("")
    }

    pub fn username(&self) -> Option<&str> {
        self.user.as_ref().map(|u| u.username.as_str())
    }

    /// Refuses a POST whose `authenticity_token` is missing or not this session's.
    pub fn check_csrf(&self, presented: Option<&str>) -> Result<(), PageError> {
        match (&self.session, presented) {
            (Some(session), Some(token))
                if !token.is_empty() && hashes_equal(&session.csrf_token, token) =>
            {
                Ok(())
            }
            _ => Err(PageError::Csrf),
        }
    }

    pub(crate) fn session_hash(&self) -> Option<&str> {
        self.session.as_ref().map(|s| s.id_hash.as_str())
    }
}

/// A fresh random value, hex: session ids and CSRF tokens.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The value of cookie `name` in the request, if sent once and well-formed.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = None;
    for header in headers.get_all(axum::http::header::COOKIE) {
        let Ok(text) = header.to_str() else { continue };
        for pair in text.split(';') {
            if let Some((key, value)) = pair.trim().split_once('=') {
                if key == name {
                    if found.is_some() {
                        // Two values (one planted through a sibling domain?): trust neither.
                        return None;
                    }
                    found = Some(value);
                }
            }
        }
    }
    found.filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The viewer a request's session cookie names: signed out when there is none, it is unknown
/// or expired, or its user is blocked.
pub async fn viewer(state: &WebState, headers: &HeaderMap) -> Result<Viewer, PageError> {
    let Some(id) = cookie(headers, SESSION_COOKIE) else { return Ok(Viewer::default()) };
    let hash = token_hash(id);
    match state.store().web_session(&hash).await? {
        Some((session, user)) if !user.blocked && hashes_equal(&session.id_hash, &hash) => {
            Ok(Viewer { user: Some(user), session: Some(session) })
        }
        _ => Ok(Viewer::default()),
    }
}

/// Starts a session for `user`; answers the `Set-Cookie` value that hands it to the browser.
pub async fn start(state: &WebState, user: &meta::User) -> Result<HeaderValue, PageError> {
    let id = random_token();
    let now = meta::now_millis();
    let lifetime = state.session_lifetime.as_millis() as i64;
    let session = meta::WebSession {
        id_hash: token_hash(&id),
        user_id: user.id,
        csrf_token: random_token(),
        created_at: now,
        expires_at: now + lifetime,
    };
    state.store().create_web_session(&session).await?;
    Ok(set_cookie(state, SESSION_COOKIE, &id, "/", "Lax", Some(lifetime / 1000)))
}

/// Ends the viewer's session (sign-out); answers the `Set-Cookie` value that clears it.
pub async fn end(state: &WebState, viewer: &Viewer) -> Result<HeaderValue, PageError> {
    if let Some(hash) = viewer.session_hash() {
        state.store().delete_web_session(hash).await?;
    }
    Ok(set_cookie(state, SESSION_COOKIE, "", "/", "Lax", Some(0)))
}

/// The double-submit cookie of the sign-in form.
pub fn login_csrf_cookie(state: &WebState, token: &str) -> HeaderValue {
    set_cookie(state, LOGIN_CSRF_COOKIE, token, "/users/sign_in", "Strict", None)
}

/// `Set-Cookie` with the flags every cookie of the UI has.
fn set_cookie(
    state: &WebState,
    name: &str,
    value: &str,
    path: &str,
    same_site: &str,
    max_age: Option<i64>,
) -> HeaderValue {
    let mut cookie = format!("{name}={value}; Path={path}; HttpOnly; SameSite={same_site}");
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    if state.secure_cookies {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie).expect("cookie values are hex")
}
