//! The access decision for registry requests, and the proof that it was made.
//!
//! A surface (the `/v2` API today; a UI or the proxy later) parses its request into typed values
//! once, then asks the [`Gate`] for the access it needs. The gate answers with a proof value —
//! [`RepositoryAccess`], [`CatalogAccess`] or [`BaseAccess`] — that nothing outside this module
//! can construct. The proof carries the repository name it was granted for, so a handler that
//! takes a proof can only ever act on the name that was authorized: there is no second copy of
//! the name to disagree with, and no handler can run without a decision. "No decision" never
//! means "allowed".
//!
//! Reads are decided from the token's signed claims alone (cheap, and the token lives minutes).
//! Writes (push, delete) re-check the credential behind the token on every request: a user
//! blocked, a token revoked or a membership removed a moment ago stops writing at once, and the
//! caller's current role is what protection rules compare against.

use std::sync::Arc;

use meta::events::AuditActor;
use meta::{access_level, MetaError, Store};
use oci::RepositoryName;

use crate::jwt::{Claims, TokenService};
use crate::policy::{self, Identity};
use crate::scope::Scope;

/// Repository actions, as in token scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    /// The scope actions a client should ask for to be allowed `self` (a push needs pull too:
    /// clients check for existing blobs before uploading).
    fn scope_actions(self) -> Vec<String> {
        match self {
            Action::Push => vec!["pull".into(), "push".into()],
            other => vec![other.as_str().into()],
        }
    }
}

/// Who a decision was made for.
#[derive(Clone, Debug)]
enum Principal {
    /// `auth.mode: none`: the operator opened the registry to everyone, with every right.
    Open,
    /// The credential a verified token names (`user:1`, `pat:3`, `deploy:2`, `job:7`,
    /// `anonymous`).
    Credential(String),
    /// A credential re-checked during this request.
    Identity(Box<Identity>),
}

/// Why a request was refused. The surface renders it (401 with a Bearer challenge).
#[derive(Debug)]
pub enum Refusal {
    /// No valid credential: the client should fetch a token for `scope`.
    Unauthenticated { scope: Option<Scope> },
    /// A valid token that does not allow the request.
    Denied { scope: Scope },
    /// A write refused because the caller has no project at the name (or it is a group's
    /// path): `message` says so and names the fix. Private projects never produce a message
    /// that differs from a missing one (see [`policy::missing_project_hint`]).
    NoProject { scope: Scope, message: String },
    /// The decision could not be made (the database failed).
    Failed(MetaError),
}

impl From<MetaError> for Refusal {
    fn from(e: MetaError) -> Self {
        Refusal::Failed(e)
    }
}

/// Proof that a caller may use `GET /v2/`.
#[derive(Debug)]
pub struct BaseAccess(());

/// Proof that a caller may list repositories; the listing shows only what it may read.
pub struct CatalogAccess {
    principal: Principal,
    store: Option<Store>,
}

/// Proof that a caller may take `action` on repository `name`.
pub struct RepositoryAccess {
    name: RepositoryName,
    action: Action,
    principal: Principal,
    /// The caller's current role on the repository's project, for writes (see the module docs).
    role: i64,
    store: Option<Store>,
    /// Who the caller is, for the audit log and events.
    actor: AuditActor,
}

impl RepositoryAccess {
    /// Who the decision was made for, as the audit log and registry events name it.
    pub fn actor(&self) -> &AuditActor {
        &self.actor
    }

    /// The repository the decision was made for: the only name a handler may act on.
    pub fn name(&self) -> &RepositoryName {
        &self.name
    }

    pub fn action(&self) -> Action {
        self.action
    }

    /// The caller's access level on the project, for rules such as tag protection: GitLab's
    /// levels (10 guest … 50 owner, [`access_level::ADMIN`] for instance admins and for an
    /// open registry). Known for writes; reads carry [`access_level::NONE`], the most
    /// restrictive value, so a rule checked against a read grant fails closed.
    pub fn role(&self) -> i64 {
        self.role
    }

    /// Whether the same caller may pull another repository (cross-repository mounts).
    pub async fn may_pull(&self, other: &RepositoryName) -> Result<bool, MetaError> {
        may_pull(&self.principal, self.store.as_ref(), other).await
    }
}

impl CatalogAccess {
    /// Whether the caller sees every repository (an open registry), so a listing need not
    /// filter. Instance admins do not: registries with access `disabled` stay hidden from them.
    pub fn sees_everything(&self) -> bool {
        matches!(self.principal, Principal::Open)
    }

    /// Up to `limit` names of the repositories the caller may pull, after `last` in name
    /// order: one query over the readable set ([`policy::registry_reader`]), so a page costs
    /// the same for every caller. What it may not pull is left out, exactly as if it did not
    /// exist.
    pub async fn readable_repositories(
        &self,
        last: Option<&RepositoryName>,
        limit: i64,
    ) -> Result<Vec<String>, MetaError> {
        // An open registry (`sees_everything`) is listed by the caller without a filter.
        let Some(store) = self.store.as_ref() else { return Ok(Vec::new()) };
        let identity = match &self.principal {
            Principal::Open => return store.list_repositories(last, limit).await,
            Principal::Identity(identity) => Some(identity.as_ref().clone()),
            Principal::Credential(cred) => policy::load_identity(store, cred).await?,
        };
        // A credential no longer valid reads nothing.
        let Some(identity) = identity else { return Ok(Vec::new()) };
        store
            .readable_repository_names(
                &policy::registry_reader(&identity),
                policy::MAX_EXTRA_SEGMENTS as i64,
                last.map(|l| l.as_str()),
                limit,
            )
            .await
    }
}

async fn may_pull(
    principal: &Principal,
    store: Option<&Store>,
    name: &RepositoryName,
) -> Result<bool, MetaError> {
    let identity = match principal {
        Principal::Open => return Ok(true),
        Principal::Identity(identity) => Some(identity.as_ref().clone()),
        Principal::Credential(cred) => match store {
            Some(store) => policy::load_identity(store, cred).await?,
            None => None,
        },
    };
    let (Some(identity), Some(store)) = (identity, store) else { return Ok(false) };
    Ok(policy::allowed_on_image(store, &identity, name).await?.contains(&Action::Pull))
}

/// Makes the access decision for registry requests.
#[derive(Clone)]
pub enum Gate {
    /// `auth.mode: none`: everything is allowed to everyone (for experiments and benchmarks).
    Open,
    /// Docker token authentication with GitLab's permissions.
    Token(Arc<TokenGate>),
}

/// The state of [`Gate::Token`].
pub struct TokenGate {
    pub store: Store,
    pub tokens: Arc<TokenService>,
    /// The token endpoint clients are sent to (`https://registry.example.com/jwt/auth`).
    pub realm: String,
}

impl Gate {
    pub fn token(store: Store, tokens: Arc<TokenService>, realm: String) -> Gate {
        Gate::Token(Arc::new(TokenGate { store, tokens, realm }))
    }

    /// `WWW-Authenticate` for a refusal, or `None` when no challenge applies.
    pub fn challenge(&self, refusal: &Refusal) -> Option<String> {
        let Gate::Token(gate) = self else { return None };
        let (scope, denied, description) = match refusal {
            Refusal::Unauthenticated { scope } => (scope.as_ref(), false, None),
            Refusal::Denied { scope } => (Some(scope), true, None),
            Refusal::NoProject { scope, message } => (Some(scope), true, Some(message)),
            Refusal::Failed(_) => return None,
        };
        let mut value =
            format!("Bearer realm=\"{}\",service=\"{}\"", gate.realm, gate.tokens.service);
        if let Some(scope) = scope {
            value.push_str(&format!(",scope=\"{}\"", scope.to_challenge()));
        }
        if denied {
            value.push_str(",error=\"insufficient_scope\"");
        }
        if let Some(description) = description {
            // A quoted-string: the message has no quotes or backslashes of its own, but a
            // repository name is not trusted to keep it that way.
            let quoted: String = description
                .chars()
                .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
                .collect();
            value.push_str(&format!(",error_description=\"{quoted}\""));
        }
        Some(value)
    }

    /// `GET /v2/`: any caller with a valid token (an anonymous one included).
    pub fn base(&self, bearer: Option<&str>) -> Result<BaseAccess, Refusal> {
        match self {
            Gate::Open => Ok(BaseAccess(())),
            Gate::Token(gate) => match bearer.map(|t| gate.tokens.verify(t)) {
                Some(Ok(_)) => Ok(BaseAccess(())),
                _ => Err(Refusal::Unauthenticated { scope: None }),
            },
        }
    }

    /// `GET /v2/_catalog`: needs the `registry:catalog:*` scope.
    pub async fn catalog(&self, bearer: Option<&str>) -> Result<CatalogAccess, Refusal> {
        let gate = match self {
            Gate::Open => return Ok(CatalogAccess { principal: Principal::Open, store: None }),
            Gate::Token(gate) => gate,
        };
        let scope =
            Scope { kind: "registry".into(), name: "catalog".into(), actions: vec!["*".into()] };
        match bearer.map(|t| gate.tokens.verify(t)) {
            Some(Ok(claims)) if covers(&claims, "registry", "catalog", "*") => {
                let Some(identity) = policy::load_identity(&gate.store, &claims.cred).await? else {
                    return Err(Refusal::Unauthenticated { scope: Some(scope) });
                };
                Ok(CatalogAccess {
                    principal: Principal::Identity(Box::new(identity)),
                    store: Some(gate.store.clone()),
                })
            }
            Some(Ok(_)) => Err(Refusal::Denied { scope }),
            _ => Err(Refusal::Unauthenticated { scope: Some(scope) }),
        }
    }

    /// An action on one repository. `upload` names the upload session a request continues:
    /// such a request may present a token that expired after the session started (see
    /// [`TokenGate::continues_upload`]).
    pub async fn repository(
        &self,
        name: RepositoryName,
        action: Action,
        upload: Option<&str>,
        bearer: Option<&str>,
    ) -> Result<RepositoryAccess, Refusal> {
        let gate = match self {
            Gate::Open => {
                return Ok(RepositoryAccess {
                    name,
                    action,
                    principal: Principal::Open,
                    role: access_level::ADMIN,
                    store: None,
                    actor: AuditActor::anonymous(),
                })
            }
            Gate::Token(gate) => gate,
        };
        let scope = Scope {
            kind: "repository".into(),
            name: name.to_string(),
            actions: action.scope_actions(),
        };
        let claims = match bearer.map(|t| gate.tokens.verify(t)) {
            Some(Ok(claims)) => claims,
            Some(Err(e))
                if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature)
                    && upload.is_some() =>
            {
                let token = bearer.unwrap_or_default();
                let id = upload.unwrap_or_default();
                match gate.continues_upload(token, &name, id).await? {
                    Some(claims) => claims,
                    None => return Err(Refusal::Unauthenticated { scope: Some(scope) }),
                }
            }
            _ => return Err(Refusal::Unauthenticated { scope: Some(scope) }),
        };
        if !covers(&claims, "repository", name.as_str(), action.as_str()) {
            return Err(gate.refuse_write(&claims.cred, action, scope).await?);
        }
        if action == Action::Pull {
            return Ok(RepositoryAccess {
                actor: policy::actor_of_claims(&claims.cred, &claims.sub),
                name,
                action,
                principal: Principal::Credential(claims.cred),
                role: access_level::NONE,
                store: Some(gate.store.clone()),
            });
        }
        // A write: the credential must still be valid and still allow it, now.
        let Some(identity) = policy::load_identity(&gate.store, &claims.cred).await? else {
            return Err(Refusal::Unauthenticated { scope: Some(scope) });
        };
        let Some(project) = policy::project_for_image(&gate.store, name.as_str()).await? else {
            return Err(gate.refuse_write(&claims.cred, action, scope).await?);
        };
        if !policy::allowed_actions(&gate.store, &identity, &project).await?.contains(&action) {
            return Err(Refusal::Denied { scope });
        }
        let role = policy::role_on_project(&gate.store, &identity, &project).await?;
        Ok(RepositoryAccess {
            actor: identity.audit_actor(),
            name,
            action,
            principal: Principal::Identity(Box::new(identity)),
            role,
            store: Some(gate.store.clone()),
        })
    }
}

impl TokenGate {
    /// The refusal of `action` on `scope`'s repository: for a write with no project the caller
    /// can see at the name, one that says so and names the fix.
    async fn refuse_write(
        &self,
        cred: &str,
        action: Action,
        scope: Scope,
    ) -> Result<Refusal, MetaError> {
        if action == Action::Pull {
            return Ok(Refusal::Denied { scope });
        }
        Ok(match policy::missing_project_hint(&self.store, cred, &scope.name).await? {
            Some(message) => Refusal::NoProject { scope, message },
            None => Refusal::Denied { scope },
        })
    }

    /// The claims of an expired token that may still continue upload `id`: otherwise valid
    /// (signature, issuer, audience), granting push on `name`, for a session of `name` that
    /// started before the token expired. Whether the credential behind it is still valid and
    /// still allows the push is checked by the caller like for any write.
    async fn continues_upload(
        &self,
        token: &str,
        name: &RepositoryName,
        id: &str,
    ) -> Result<Option<Claims>, MetaError> {
        let Ok(claims) = self.tokens.verify_ignoring_expiry(token) else { return Ok(None) };
        if !covers(&claims, "repository", name.as_str(), "push") {
            return Ok(None);
        }
        Ok(match self.store.upload(id).await? {
            Some(upload)
                if upload.repository == name.as_str()
                    && upload.created_at <= claims.exp as i64 * 1000 =>
            {
                Some(claims)
            }
            _ => None,
        })
    }
}

fn covers(claims: &Claims, kind: &str, name: &str, action: &str) -> bool {
    claims.access.iter().any(|a| {
        a.kind == kind && a.name == name && a.actions.iter().any(|x| x == action || x == "*")
    })
}
