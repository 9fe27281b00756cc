//! Personal access tokens (and the input rules deploy tokens share): which names, scopes and
//! expiry dates a new token may have, who may see or revoke one, creating one (its secret is
//! shown once and only its hash stored) and revoking it. The REST API
//! (`/users/:id/personal_access_tokens`, `/personal_access_tokens/:id`) and the web UI's
//! `/-/user_settings/personal_access_tokens` page both call these.

use meta::{DeployToken, PersonalAccessToken, SourceType, Store};

use meta::events::AuditEntity;
use serde_json::json;

use crate::settings::{record_change, require_maintainer, Changed, SettingsError};
use crate::RequestContext;

/// Scopes a personal access token may have.
pub const PAT_SCOPES: &[&str] = &["api", "read_registry", "write_registry"];
/// Scopes a deploy token may have.
pub const DEPLOY_SCOPES: &[&str] = &["read_registry", "write_registry"];

const MS_PER_DAY: i64 = 86_400_000;

/// A token to create, as the request gave it.
#[derive(Clone, Debug, Default)]
pub struct NewToken {
    pub name: String,
    pub scopes: Vec<String>,
    /// `YYYY-MM-DD` (GitLab's `expires_at`); empty or `None`: never expires.
    pub expires_at: Option<String>,
}

/// The scopes asked for, each one of `allowed`, without repeats; at least one.
pub fn check_scopes(scopes: &[String], allowed: &[&str]) -> Result<Vec<String>, SettingsError> {
    if scopes.is_empty() {
        return Err(SettingsError::field(
            "scopes",
            format!("must name at least one of {}", allowed.join(", ")),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for s in scopes {
        if !allowed.contains(&s.as_str()) {
            return Err(SettingsError::field(
                "scopes",
                format!("{s:?} is not supported here: use {}", allowed.join(", ")),
            ));
        }
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    Ok(out)
}

/// An expiry date that is in the future, or none.
pub fn parse_future_expiry(text: Option<&str>) -> Result<Option<i64>, SettingsError> {
    match text.filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => {
            let at = parse_expiry_date(t)?;
            if at <= meta::now_millis() {
                return Err(SettingsError::field("expires_at", "must be a date in the future"));
            }
            Ok(Some(at))
        }
    }
}

/// A token name: not blank.
pub fn check_name(name: &str) -> Result<(), SettingsError> {
    if name.trim().is_empty() {
        return Err(SettingsError::field("name", "must not be empty"));
    }
    Ok(())
}

/// THE rule for who may see, revoke or rotate a personal access token: its owner, or an
/// instance admin (`is_admin`; the operator counts as one).
pub fn may_manage_personal_access_token(
    is_admin: bool,
    user_id: Option<i64>,
    token: &PersonalAccessToken,
) -> bool {
    is_admin || user_id == Some(token.user_id)
}

/// Records a change of personal access token `token` in its user's audit log.
pub async fn record_token_change(
    store: &Store,
    ctx: &RequestContext,
    action: &str,
    token: &PersonalAccessToken,
) {
    let owner = store.user_by_id(token.user_id).await.ok().flatten();
    let changed = Changed {
        entity: AuditEntity::user(token.user_id, owner.as_ref().map_or("", |u| &u.username)),
        action,
        target_type: "PersonalAccessToken",
        target_id: token.id.to_string(),
        target_details: token.name.clone(),
        details: json!({ "scopes": token.scopes }),
    };
    record_change(store, ctx, changed).await;
}

/// Creates a token for user `owner_id` (the caller decided that it may) and records it for
/// `ctx`; returns it with its secret, which is never available again.
pub async fn create_personal_access_token(
    store: &Store,
    owner_id: i64,
    new: NewToken,
    ctx: &RequestContext,
) -> Result<(PersonalAccessToken, String), SettingsError> {
    check_name(&new.name)?;
    let scopes = check_scopes(&new.scopes, PAT_SCOPES)?;
    let expires_at = parse_future_expiry(new.expires_at.as_deref())?;
    let secret = auth::secret::new_token(auth::secret::PAT_PREFIX);
    let hash = auth::secret::token_hash(&secret);
    let token = store
        .create_personal_access_token(owner_id, new.name.trim(), &hash, &scopes, expires_at)
        .await?;
    record_token_change(store, ctx, "token_create", &token).await;
    Ok((token, secret))
}

/// Token `id` if a caller (`is_admin`, `user_id`) may manage it; a token they may not is
/// [`SettingsError::NotFound`], like one that does not exist.
pub async fn managed_personal_access_token(
    store: &Store,
    is_admin: bool,
    user_id: Option<i64>,
    id: i64,
) -> Result<PersonalAccessToken, SettingsError> {
    match store.personal_access_token_by_id(id).await? {
        Some(token) if may_manage_personal_access_token(is_admin, user_id, &token) => Ok(token),
        _ => Err(SettingsError::NotFound),
    }
}

/// Revokes `token` (found through [`managed_personal_access_token`]): it stops working at
/// once. Recorded for `ctx`.
pub async fn revoke_personal_access_token(
    store: &Store,
    token: &PersonalAccessToken,
    ctx: &RequestContext,
) -> Result<(), SettingsError> {
    store.revoke_personal_access_token(token.id).await?;
    record_token_change(store, ctx, "token_revoke", token).await;
    Ok(())
}

// ---- deploy tokens --------------------------------------------------------------------------

/// What deploy tokens attach to: a group or a project, as the audit log names it.
#[derive(Clone, Debug)]
pub struct TokenOwner {
    pub source_type: SourceType,
    pub id: i64,
    pub full_path: String,
}

impl TokenOwner {
    fn entity(&self) -> AuditEntity {
        AuditEntity::source(self.source_type, self.id, &self.full_path)
    }
}

/// Creates a deploy token of `owner` for a caller whose role there is `level` (maintainers
/// and above), recorded for `ctx`; returns it with its secret, shown once. Without a
/// `username`, one is made up (`stowage+deploy-token-…`); a given one must not be a user's.
pub async fn create_deploy_token(
    store: &Store,
    level: i64,
    owner: &TokenOwner,
    new: NewToken,
    username: Option<&str>,
    ctx: &RequestContext,
) -> Result<(DeployToken, String), SettingsError> {
    require_maintainer(level, "managing deploy tokens")?;
    check_name(&new.name)?;
    let scopes = check_scopes(&new.scopes, DEPLOY_SCOPES)?;
    let expires_at = parse_future_expiry(new.expires_at.as_deref())?;
    let username = match username.map(str::trim).filter(|u| !u.is_empty()) {
        Some(u) => {
            let ok =
                u.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+'));
            if !ok || u.len() > 255 {
                return Err(SettingsError::field(
                    "username",
                    "may only contain letters, digits, '_', '-', '.' and '+'",
                ));
            }
            if u == auth::CI_USERNAME || store.user_by_username(u).await?.is_some() {
                return Err(SettingsError::Conflict(format!(
                    "{u} is already taken by a user: choose another username"
                )));
            }
            u.to_string()
        }
        None => format!(
            "stowage+deploy-token-{}",
            auth::secret::new_token("")[..10].to_ascii_lowercase()
        ),
    };
    let secret = auth::secret::new_token(auth::secret::DEPLOY_PREFIX);
    let hash = auth::secret::token_hash(&secret);
    let token = store
        .create_deploy_token(
            owner.source_type,
            owner.id,
            new.name.trim(),
            &username,
            &hash,
            &scopes,
            expires_at,
        )
        .await?;
    let changed = Changed {
        entity: owner.entity(),
        action: "token_create",
        target_type: "DeployToken",
        target_id: token.id.to_string(),
        target_details: token.name.clone(),
        details: json!({ "username": token.username, "scopes": token.scopes }),
    };
    record_change(store, ctx, changed).await;
    Ok((token, secret))
}

/// Revokes deploy token `id` of `owner` for a caller whose role there is `level`, recorded
/// for `ctx`; [`SettingsError::NotFound`] when `owner` has no such token.
pub async fn revoke_deploy_token(
    store: &Store,
    level: i64,
    owner: &TokenOwner,
    id: i64,
    ctx: &RequestContext,
) -> Result<(), SettingsError> {
    require_maintainer(level, "managing deploy tokens")?;
    if !store.revoke_deploy_token(owner.source_type, owner.id, id).await? {
        return Err(SettingsError::NotFound);
    }
    let changed = Changed {
        entity: owner.entity(),
        action: "token_revoke",
        target_type: "DeployToken",
        target_id: id.to_string(),
        target_details: String::new(),
        details: json!({}),
    };
    record_change(store, ctx, changed).await;
    Ok(())
}

/// Parses GitLab's `expires_at` (`YYYY-MM-DD`, or an ISO 8601 date-time `YYYY-MM-DDT…` whose
/// date part is used) into the millisecond timestamp of that day's start, UTC. Digits only:
/// `+024-01-01` is not another spelling of year 24.
pub fn parse_expiry_date(text: &str) -> Result<i64, SettingsError> {
    let bad = || {
        SettingsError::field(
            "expires_at",
            format!("{} is not a date: use YYYY-MM-DD", oci::preview(text)),
        )
    };
    let (day, rest) = match text.get(..10) {
        Some(day) => (day, &text[10..]),
        None => return Err(bad()),
    };
    if !(rest.is_empty() || rest.starts_with('T')) {
        return Err(bad());
    }
    let number = |digits: &str| -> Result<u32, SettingsError> {
        if digits.bytes().all(|b| b.is_ascii_digit()) {
            digits.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let mut parts = day.split('-');
    let (y, m, d) = match (parts.next(), parts.next(), parts.next()) {
        (Some(y), Some(m), Some(d)) if y.len() == 4 && m.len() == 2 && d.len() == 2 => {
            (i64::from(number(y)?), number(m)?, number(d)?)
        }
        _ => return Err(bad()),
    };
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return Err(bad());
    }
    Ok(days_from_civil(y, m, d) * MS_PER_DAY)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's civil calendar algorithms.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_dates() {
        assert_eq!(parse_expiry_date("2024-02-29").unwrap(), 1_709_164_800_000);
        assert_eq!(parse_expiry_date("2024-02-29T10:00:00Z").unwrap(), 1_709_164_800_000);
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "tomorrow",
            "2024-1-01",
            "",
            "+024-01-01",
            "2024-+1-01",
            "2024-01-+1",
            "2024-02-29garbage",
            "2024-02-29 10:00",
        ] {
            assert!(parse_expiry_date(bad).is_err(), "{bad}");
        }
        assert!(parse_future_expiry(Some("2000-01-01")).is_err());
        assert_eq!(parse_future_expiry(Some("")).unwrap(), None);
    }

    #[test]
    fn scopes() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(check_scopes(&s(&["api", "api"]), PAT_SCOPES).unwrap(), s(&["api"]));
        assert!(check_scopes(&s(&[]), PAT_SCOPES).is_err());
        assert!(check_scopes(&s(&["sudo"]), PAT_SCOPES).is_err());
        assert!(check_scopes(&s(&["api"]), DEPLOY_SCOPES).is_err());
    }
}
