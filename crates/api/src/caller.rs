//! Who is calling: authentication of `/api/v4` requests by personal access token.
//!
//! A token comes in the `PRIVATE-TOKEN` header or as `Authorization: Bearer`. No token means an
//! anonymous caller, who may still read public things; a token that is unknown, revoked,
//! expired or whose user is blocked is refused outright, so a script never silently falls back
//! to anonymous access.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;

use meta::events::AuditActor;

use crate::error::ApiError;
use crate::ApiState;

/// The scope a personal access token needs for the REST API.
pub const API_SCOPE: &str = "api";

/// The identity a request (or CLI command) acts as.
#[derive(Clone, Debug)]
pub enum Caller {
    Anonymous,
    User(meta::User),
    /// The operator at the server's shell (`stowage admin`): an admin that is no user.
    Operator,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        match self {
            Caller::Anonymous => false,
            Caller::User(u) => u.is_admin,
            Caller::Operator => true,
        }
    }

    pub fn user(&self) -> Option<&meta::User> {
        match self {
            Caller::User(u) => Some(u),
            _ => None,
        }
    }

    pub fn is_signed_in(&self) -> bool {
        !matches!(self, Caller::Anonymous)
    }

    /// Refuses anonymous callers.
    pub fn require_signed_in(&self) -> Result<(), ApiError> {
        if self.is_signed_in() {
            Ok(())
        } else {
            Err(ApiError::Unauthorized)
        }
    }

    /// Refuses everyone but admins.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        self.require_signed_in()?;
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

fn presented_token(headers: &HeaderMap) -> Option<&str> {
    if let Some(token) = headers.get("private-token") {
        return Some(token.to_str().unwrap_or(""));
    }
    let authorization = headers.get(axum::http::header::AUTHORIZATION)?.to_str().unwrap_or("");
    match authorization.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Some(token.trim()),
        // Another scheme (e.g. Basic) is not a credential this API accepts.
        _ => Some(""),
    }
}

/// Resolves a presented personal access token to its user. Whether the token is valid is
/// decided by [`auth::policy::active_personal_access_token`], as for registry logins.
pub async fn authenticate(
    store: &meta::Store,
    token: &str,
) -> Result<(Caller, AuditActor), ApiError> {
    // Nothing that long or odd was ever issued: refused without a database query.
    if token.is_empty() || auth::credentials::acceptable(token).is_err() {
        return Err(ApiError::Unauthorized);
    }
    let lookup = auth::policy::PatLookup::Secret(token);
    let Some((pat, user)) = auth::policy::active_personal_access_token(store, lookup).await? else {
        return Err(ApiError::Unauthorized);
    };
    if !pat.scopes.iter().any(|s| s == API_SCOPE) {
        return Err(ApiError::InsufficientScope);
    }
    if let Err(e) = store.touch_personal_access_token(pat.id).await {
        tracing::warn!(error = %e, "recording a token's last use failed");
    }
    let actor =
        auth::Identity::User { pat: Some((pat.id, pat.scopes)), user: user.clone() }.audit_actor();
    Ok((Caller::User(user), actor))
}

/// The active personal access token this request authenticated with (for `self` in
/// `/personal_access_tokens/self`).
pub async fn presented_personal_access_token(
    store: &meta::Store,
    headers: &HeaderMap,
) -> Result<meta::PersonalAccessToken, ApiError> {
    let token = presented_token(headers).ok_or(ApiError::Unauthorized)?;
    if token.is_empty() || auth::credentials::acceptable(token).is_err() {
        return Err(ApiError::Unauthorized);
    }
    let lookup = auth::policy::PatLookup::Secret(token);
    match auth::policy::active_personal_access_token(store, lookup).await? {
        Some((pat, _)) => Ok(pat),
        None => Err(ApiError::Unauthorized),
    }
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        // Authenticated once per request, whichever extractor asks first.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let (caller, actor) = match presented_token(&parts.headers) {
            None => (Caller::Anonymous, AuditActor::anonymous()),
            Some(token) => authenticate(&state.store, token).await?,
        };
        auth::web::note_actor(&parts.extensions, &actor);
        parts.extensions.insert(caller.clone());
        parts.extensions.insert(actor);
        Ok(caller)
    }
}
