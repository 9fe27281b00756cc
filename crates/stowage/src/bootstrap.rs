//! First start: the instance admin `root`, with the password from `STOWAGE_ADMIN_PASSWORD` or
//! a generated one printed once, and optionally a personal access token with every scope from
//! `STOWAGE_ADMIN_TOKEN` for automation.

use anyhow::bail;

/// Every personal access token scope.
pub const ALL_SCOPES: &[&str] = &["api", "read_registry", "write_registry"];

/// What the operator must be told about root once the server is listening (not before: a
/// password printed by a server that then fails to bind is a password for nothing reachable).
#[must_use]
pub enum AdminNotice {
    None,
    /// Root was created with this generated password, printed once and never again.
    Generated(String),
}

impl AdminNotice {
    pub fn announce(self) {
        if let AdminNotice::Generated(password) = self {
            // Printed once, on purpose: this is the only time the password exists in clear.
            println!("created the instance admin 'root' with password: {password}");
            println!(
                "(set STOWAGE_ADMIN_PASSWORD before the first start to choose it; change it with \
                 `stowage admin users set-password root`)"
            );
        }
    }
}

pub async fn ensure_admin(store: &meta::Store) -> anyhow::Result<AdminNotice> {
    let seed_token = std::env::var("STOWAGE_ADMIN_TOKEN").ok().filter(|t| !t.is_empty());
    if let Some(token) = &seed_token {
        if token.len() < 20 {
            bail!("STOWAGE_ADMIN_TOKEN must be at least 20 characters long");
        }
    }
    let chosen = std::env::var("STOWAGE_ADMIN_PASSWORD").ok().filter(|p| !p.is_empty());
    if let Some(password) = &chosen {
        // The same rule as every other password, so root can always log in with it.
        if let Err(why) = auth::credentials::check_new_password(password) {
            bail!("STOWAGE_ADMIN_PASSWORD {why}");
        }
    }
    let mut notice = AdminNotice::None;
    let root = match store.user_by_username("root").await? {
        Some(root) => {
            if let (Some(password), Some(hash)) = (&chosen, &root.password_hash) {
                if !auth::secret::verify_password(password, hash).await? {
                    tracing::warn!(
                        "STOWAGE_ADMIN_PASSWORD is ignored: it only sets root's password on the \
                         first start, and root already has another one; change it with \
                         `stowage admin users set-password root` (reads the new password from stdin)"
                    );
                }
            }
            root
        }
        None => {
            let password = match &chosen {
                Some(p) => p.clone(),
                None => auth::secret::new_password(),
            };
            let hash = auth::secret::hash_password(&password).await?;
            let root = match store
                .create_user("root", "root@localhost", "Administrator", Some(&hash), true)
                .await
            {
                Ok(user) => user,
                // Another instance created it at the same moment.
                Err(meta::MetaError::Conflict(_)) => store
                    .user_by_username("root")
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("root vanished"))?,
                Err(e) => return Err(e.into()),
            };
            if chosen.is_none() {
                notice = AdminNotice::Generated(password);
            } else {
                tracing::info!("created the instance admin 'root' with the password from STOWAGE_ADMIN_PASSWORD");
            }
            root
        }
    };
    if let Some(token) = seed_token {
        let hash = auth::secret::token_hash(&token);
        if store.personal_access_token_by_hash(&hash).await?.is_none() {
            let scopes: Vec<String> = ALL_SCOPES.iter().map(|s| s.to_string()).collect();
            match store
                .create_personal_access_token(root.id, "STOWAGE_ADMIN_TOKEN", &hash, &scopes, None)
                .await
            {
                Ok(_) | Err(meta::MetaError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
            tracing::info!("seeded a personal access token for root from STOWAGE_ADMIN_TOKEN");
        }
    }
    Ok(notice)
}
