//! Queries for tenancy and credentials: users, groups, projects, members, tokens and the
//! token signing key. Tokens arrive here already hashed; this module never sees a secret.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::now_millis;
use crate::store::{get_i64, placeholders, MetaError, Store};

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $text:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),* }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }
            pub fn parse(s: &str) -> Option<$name> {
                match s { $($text => Some($name::$variant),)* _ => None }
            }
        }
    };
}

string_enum!(
    /// Who can see a group or project.
    Visibility { Private = "private", Internal = "internal", Public = "public" }
);

string_enum!(
    /// A project's `container_registry_access_level`.
    RegistryAccess { Enabled = "enabled", Private = "private", Disabled = "disabled" }
);

string_enum!(
    /// What a membership or deploy token is attached to.
    SourceType { Group = "group", Project = "project" }
);

/// GitLab's access levels.
pub mod access_level {
    pub const NONE: i64 = 0;
    pub const GUEST: i64 = 10;
    pub const REPORTER: i64 = 20;
    pub const DEVELOPER: i64 = 30;
    pub const MAINTAINER: i64 = 40;
    pub const OWNER: i64 = 50;
    /// Instance admins, above owners (protection rules' `admin`).
    pub const ADMIN: i64 = 60;

    pub fn is_valid(level: i64) -> bool {
        matches!(level, GUEST | REPORTER | DEVELOPER | MAINTAINER | OWNER)
    }
}

#[derive(Clone, Debug)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub name: String,
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub blocked: bool,
    pub created_at: i64,
}

#[derive(Clone, Debug)]
pub struct Group {
    pub id: i64,
    pub name: String,
    pub path: String,
    pub full_path: String,
    pub parent_id: Option<i64>,
    pub visibility: Visibility,
    pub created_at: i64,
}

#[derive(Clone, Debug)]
pub struct Project {
    pub id: i64,
    pub name: String,
    pub path: String,
    pub full_path: String,
    pub group_id: i64,
    pub visibility: Visibility,
    pub registry_access: RegistryAccess,
    pub created_at: i64,
}

#[derive(Clone, Debug)]
pub struct Member {
    pub source_type: SourceType,
    pub source_id: i64,
    pub user_id: i64,
    pub access_level: i64,
    pub created_at: i64,
}

#[derive(Clone, Debug)]
pub struct PersonalAccessToken {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<i64>,
    pub revoked: bool,
    pub last_used_at: Option<i64>,
    pub created_at: i64,
}

#[derive(Clone, Debug)]
pub struct DeployToken {
    pub id: i64,
    pub source_type: SourceType,
    pub source_id: i64,
    pub name: String,
    pub username: String,
    pub token_hash: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<i64>,
    pub revoked: bool,
    pub created_at: i64,
}

#[derive(Clone, Debug)]
pub struct JobToken {
    pub id: i64,
    pub project_id: i64,
    pub user_id: Option<i64>,
    pub expires_at: i64,
    pub created_at: i64,
}

/// A token signing key as stored: PKCS#8 DER of the private key.
#[derive(Clone, Debug)]
pub struct SigningKey {
    pub kid: String,
    pub algorithm: String,
    pub private_der: Vec<u8>,
}

fn scopes_of(text: &str) -> Vec<String> {
    text.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect()
}

pub(crate) fn user_from_row(r: &AnyRow) -> User {
    User {
        id: get_i64(r, "id"),
        username: r.get("username"),
        email: r.get("email"),
        name: r.get("name"),
        password_hash: r.get("password_hash"),
        is_admin: get_i64(r, "is_admin") != 0,
        blocked: r.get::<String, _>("state") == "blocked",
        created_at: get_i64(r, "created_at"),
    }
}

fn group_from_row(r: &AnyRow) -> Group {
    Group {
        id: get_i64(r, "id"),
        name: r.get("name"),
        path: r.get("path"),
        full_path: r.get("full_path"),
        parent_id: r.get::<Option<i64>, _>("parent_id"),
        visibility: Visibility::parse(&r.get::<String, _>("visibility"))
            .unwrap_or(Visibility::Private),
        created_at: get_i64(r, "created_at"),
    }
}

pub(crate) fn project_from_row(r: &AnyRow) -> Project {
    Project {
        id: get_i64(r, "id"),
        name: r.get("name"),
        path: r.get("path"),
        full_path: r.get("full_path"),
        group_id: get_i64(r, "group_id"),
        visibility: Visibility::parse(&r.get::<String, _>("visibility"))
            .unwrap_or(Visibility::Private),
        registry_access: RegistryAccess::parse(&r.get::<String, _>("registry_access_level"))
            .unwrap_or(RegistryAccess::Disabled),
        created_at: get_i64(r, "created_at"),
    }
}

fn pat_from_row(r: &AnyRow) -> PersonalAccessToken {
    PersonalAccessToken {
        id: get_i64(r, "id"),
        user_id: get_i64(r, "user_id"),
        name: r.get("name"),
        scopes: scopes_of(&r.get::<String, _>("scopes")),
        expires_at: r.get::<Option<i64>, _>("expires_at"),
        revoked: get_i64(r, "revoked") != 0,
        last_used_at: r.get::<Option<i64>, _>("last_used_at"),
        created_at: get_i64(r, "created_at"),
    }
}

fn deploy_from_row(r: &AnyRow) -> DeployToken {
    DeployToken {
        id: get_i64(r, "id"),
        source_type: SourceType::parse(&r.get::<String, _>("source_type"))
            .unwrap_or(SourceType::Project),
        source_id: get_i64(r, "source_id"),
        name: r.get("name"),
        username: r.get("username"),
        token_hash: r.get("token_hash"),
        scopes: scopes_of(&r.get::<String, _>("scopes")),
        expires_at: r.get::<Option<i64>, _>("expires_at"),
        revoked: get_i64(r, "revoked") != 0,
        created_at: get_i64(r, "created_at"),
    }
}

fn job_from_row(r: &AnyRow) -> JobToken {
    JobToken {
        id: get_i64(r, "id"),
        project_id: get_i64(r, "project_id"),
        user_id: r.get::<Option<i64>, _>("user_id"),
        expires_at: get_i64(r, "expires_at"),
        created_at: get_i64(r, "created_at"),
    }
}

/// Maps a unique-constraint violation to [`MetaError::Conflict`] with `what` as the message.
fn conflict(e: sqlx::Error, what: impl Into<String>) -> MetaError {
    let unique = match &e {
        sqlx::Error::Database(db) => {
            db.kind() == sqlx::error::ErrorKind::UniqueViolation
                || db.message().contains("UNIQUE")
                || db.message().contains("duplicate key")
        }
        _ => false,
    };
    if unique {
        MetaError::Conflict(what.into())
    } else {
        MetaError::Database(e)
    }
}

/// `a/b/c` → `["a", "a/b", "a/b/c"]`.
pub fn path_prefixes(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut end = 0;
    for (i, c) in path.char_indices() {
        if c == '/' {
            out.push(path[..i].to_string());
        }
        end = i + c.len_utf8();
    }
    if end > 0 {
        out.push(path.to_string());
    }
    out
}

impl Store {
    // ---- users --------------------------------------------------------------------------

    pub async fn create_user(
        &self,
        username: &str,
        email: &str,
        name: &str,
        password_hash: Option<&str>,
        is_admin: bool,
    ) -> Result<User, MetaError> {
        let mut w = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO users (username, email, name, password_hash, is_admin, state, created_at) \
             VALUES ($1, $2, $3, $4, $5, 'active', $6)",
        )
        .bind(username)
        .bind(email)
        .bind(name)
        .bind(password_hash)
        .bind(is_admin as i64)
        .bind(now_millis())
        .execute(&mut *w.tx)
        .await
        .map_err(|e| conflict(e, "a user with that username or email already exists"))?;
        w.commit().await?;
        self.user_by_username(username).await?.ok_or(MetaError::NotFound("user"))
    }

    pub async fn user_by_id(&self, id: i64) -> Result<Option<User>, MetaError> {
        let row = sqlx::query("SELECT * FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(user_from_row))
    }

    pub async fn user_by_username(&self, username: &str) -> Result<Option<User>, MetaError> {
        let row = sqlx::query("SELECT * FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(user_from_row))
    }

    pub async fn list_users(&self) -> Result<Vec<User>, MetaError> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY id").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(user_from_row).collect())
    }

    /// Changes a user's profile: name, email and admin flag (`PUT /users/:id`).
    pub async fn update_user_profile(
        &self,
        id: i64,
        name: &str,
        email: &str,
        is_admin: bool,
    ) -> Result<bool, MetaError> {
        let mut w = self.write_tx().await?;
        let r = sqlx::query("UPDATE users SET name = $1, email = $2, is_admin = $3 WHERE id = $4")
            .bind(name)
            .bind(email)
            .bind(is_admin as i64)
            .bind(id)
            .execute(&mut *w.tx)
            .await
            .map_err(|e| conflict(e, "a user with that email already exists"))?;
        w.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn set_user_blocked(&self, id: i64, blocked: bool) -> Result<bool, MetaError> {
        let mut w = self.write_tx().await?;
        let r = sqlx::query("UPDATE users SET state = $1 WHERE id = $2")
            .bind(if blocked { "blocked" } else { "active" })
            .bind(id)
            .execute(&mut *w.tx)
            .await?;
        w.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn set_user_password(&self, id: i64, password_hash: &str) -> Result<bool, MetaError> {
        let mut w = self.write_tx().await?;
        let r = sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(id)
            .execute(&mut *w.tx)
            .await?;
        w.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    // ---- groups and projects ------------------------------------------------------------

    /// Creates a group under `parent` (or at the top). Its full path must be unused by any
    /// group or project.
    pub async fn create_group(
        &self,
        name: &str,
        path: &str,
        parent: Option<&Group>,
        visibility: Visibility,
    ) -> Result<Group, MetaError> {
        let full_path = match parent {
            Some(p) => format!("{}/{path}", p.full_path),
            None => path.to_string(),
        };
        if self.project_by_full_path(&full_path).await?.is_some() {
            return Err(MetaError::Conflict(format!("{full_path} is already a project's path")));
        }
        let mut w = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO namespaces (name, path, full_path, parent_id, visibility, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(name)
        .bind(path)
        .bind(&full_path)
        .bind(parent.map(|p| p.id))
        .bind(visibility.as_str())
        .bind(now_millis())
        .execute(&mut *w.tx)
        .await
        .map_err(|e| conflict(e, format!("a group with path {full_path} already exists")))?;
        w.commit().await?;
        self.group_by_full_path(&full_path).await?.ok_or(MetaError::NotFound("group"))
    }

    pub async fn group_by_id(&self, id: i64) -> Result<Option<Group>, MetaError> {
        let row = sqlx::query("SELECT * FROM namespaces WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(group_from_row))
    }

    pub async fn group_by_full_path(&self, full_path: &str) -> Result<Option<Group>, MetaError> {
        let row = sqlx::query("SELECT * FROM namespaces WHERE full_path = $1")
            .bind(full_path)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(group_from_row))
    }

    pub async fn list_groups(&self) -> Result<Vec<Group>, MetaError> {
        let rows = sqlx::query("SELECT * FROM namespaces ORDER BY full_path")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(group_from_row).collect())
    }

    /// Groups whose full path is one of `paths` (e.g. every ancestor of a project).
    pub async fn groups_by_full_paths(&self, paths: &[String]) -> Result<Vec<Group>, MetaError> {
        if paths.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT * FROM namespaces WHERE full_path IN ({}) ORDER BY full_path",
            placeholders(1, paths.len())
        );
        let mut q = sqlx::query(&sql);
        for p in paths {
            q = q.bind(p);
        }
        Ok(q.fetch_all(&self.pool).await?.iter().map(group_from_row).collect())
    }

    pub async fn create_project(
        &self,
        name: &str,
        path: &str,
        group: &Group,
        visibility: Visibility,
    ) -> Result<Project, MetaError> {
        let full_path = format!("{}/{path}", group.full_path);
        if self.group_by_full_path(&full_path).await?.is_some() {
            return Err(MetaError::Conflict(format!("{full_path} is already a group's path")));
        }
        let mut w = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO projects (name, path, full_path, group_id, visibility, registry_access_level, created_at) \
             VALUES ($1, $2, $3, $4, $5, 'enabled', $6)",
        )
        .bind(name)
        .bind(path)
        .bind(&full_path)
        .bind(group.id)
        .bind(visibility.as_str())
        .bind(now_millis())
        .execute(&mut *w.tx)
        .await
        .map_err(|e| conflict(e, format!("a project with path {full_path} already exists")))?;
        w.commit().await?;
        self.project_by_full_path(&full_path).await?.ok_or(MetaError::NotFound("project"))
    }

    pub async fn project_by_id(&self, id: i64) -> Result<Option<Project>, MetaError> {
        let row = sqlx::query("SELECT * FROM projects WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(project_from_row))
    }

    pub async fn project_by_full_path(
        &self,
        full_path: &str,
    ) -> Result<Option<Project>, MetaError> {
        let row = sqlx::query("SELECT * FROM projects WHERE full_path = $1")
            .bind(full_path)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(project_from_row))
    }

    pub async fn list_projects(&self) -> Result<Vec<Project>, MetaError> {
        let rows =
            sqlx::query("SELECT * FROM projects ORDER BY full_path").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(project_from_row).collect())
    }

    /// The project with the longest full path among `candidates` (an image name's prefixes).
    pub async fn longest_project_match(
        &self,
        candidates: &[String],
    ) -> Result<Option<Project>, MetaError> {
        if candidates.is_empty() {
            return Ok(None);
        }
        let sql = format!(
            "SELECT * FROM projects WHERE full_path IN ({}) ORDER BY LENGTH(full_path) DESC LIMIT 1",
            placeholders(1, candidates.len())
        );
        let mut q = sqlx::query(&sql);
        for c in candidates {
            q = q.bind(c);
        }
        Ok(q.fetch_optional(&self.pool).await?.as_ref().map(project_from_row))
    }

    pub async fn update_project(
        &self,
        id: i64,
        visibility: Option<Visibility>,
        registry_access: Option<RegistryAccess>,
    ) -> Result<Option<Project>, MetaError> {
        let mut w = self.write_tx().await?;
        if let Some(v) = visibility {
            sqlx::query("UPDATE projects SET visibility = $1 WHERE id = $2")
                .bind(v.as_str())
                .bind(id)
                .execute(&mut *w.tx)
                .await?;
        }
        if let Some(a) = registry_access {
            sqlx::query("UPDATE projects SET registry_access_level = $1 WHERE id = $2")
                .bind(a.as_str())
                .bind(id)
                .execute(&mut *w.tx)
                .await?;
        }
        w.commit().await?;
        self.project_by_id(id).await
    }

    // ---- members ------------------------------------------------------------------------

    /// Adds or updates a membership.
    pub async fn set_member(
        &self,
        source_type: SourceType,
        source_id: i64,
        user_id: i64,
        access_level: i64,
    ) -> Result<Member, MetaError> {
        let mut w = self.write_tx().await?;
        let now = now_millis();
        sqlx::query(
            "INSERT INTO members (source_type, source_id, user_id, access_level, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (source_type, source_id, user_id) \
             DO UPDATE SET access_level = excluded.access_level",
        )
        .bind(source_type.as_str())
        .bind(source_id)
        .bind(user_id)
        .bind(access_level)
        .bind(now)
        .execute(&mut *w.tx)
        .await?;
        w.commit().await?;
        Ok(Member { source_type, source_id, user_id, access_level, created_at: now })
    }

    pub async fn remove_member(
        &self,
        source_type: SourceType,
        source_id: i64,
        user_id: i64,
    ) -> Result<bool, MetaError> {
        let mut w = self.write_tx().await?;
        let r = sqlx::query(
            "DELETE FROM members WHERE source_type = $1 AND source_id = $2 AND user_id = $3",
        )
        .bind(source_type.as_str())
        .bind(source_id)
        .bind(user_id)
        .execute(&mut *w.tx)
        .await?;
        w.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn list_members(
        &self,
        source_type: SourceType,
        source_id: i64,
    ) -> Result<Vec<Member>, MetaError> {
        let rows = sqlx::query(
            "SELECT * FROM members WHERE source_type = $1 AND source_id = $2 ORDER BY user_id",
        )
        .bind(source_type.as_str())
        .bind(source_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Member {
                source_type,
                source_id,
                user_id: get_i64(r, "user_id"),
                access_level: get_i64(r, "access_level"),
                created_at: get_i64(r, "created_at"),
            })
            .collect())
    }

    /// The highest access level `user_id` has on `project`, directly or through any
    /// ancestor group (group membership is inherited).
    pub async fn effective_access_level(
        &self,
        user_id: i64,
        project: &Project,
    ) -> Result<i64, MetaError> {
        let ancestors = path_prefixes(&project.full_path);
        let groups = &ancestors[..ancestors.len().saturating_sub(1)];
        let sql = format!(
            "SELECT COALESCE(MAX(access_level), 0) AS level FROM members WHERE user_id = $1 AND \
             ((source_type = 'project' AND source_id = $2) OR (source_type = 'group' AND source_id IN \
             (SELECT id FROM namespaces WHERE full_path IN ({}))))",
            if groups.is_empty() { "''".to_string() } else { placeholders(3, groups.len()) }
        );
        let mut q = sqlx::query(&sql).bind(user_id).bind(project.id);
        for g in groups {
            q = q.bind(g);
        }
        let row = q.fetch_one(&self.pool).await?;
        Ok(get_i64(&row, "level"))
    }

    /// The highest access level `user_id` has on `group`, directly or through an ancestor.
    pub async fn effective_group_access_level(
        &self,
        user_id: i64,
        group: &Group,
    ) -> Result<i64, MetaError> {
        let ancestors = path_prefixes(&group.full_path);
        let sql = format!(
            "SELECT COALESCE(MAX(m.access_level), 0) AS level FROM members m JOIN namespaces n \
             ON m.source_type = 'group' AND m.source_id = n.id \
             WHERE m.user_id = $1 AND n.full_path IN ({})",
            placeholders(2, ancestors.len())
        );
        let mut q = sqlx::query(&sql).bind(user_id);
        for g in &ancestors {
            q = q.bind(g);
        }
        let row = q.fetch_one(&self.pool).await?;
        Ok(get_i64(&row, "level"))
    }

    // ---- personal access tokens ---------------------------------------------------------

    pub async fn create_personal_access_token(
        &self,
        user_id: i64,
        name: &str,
        token_hash: &str,
        scopes: &[String],
        expires_at: Option<i64>,
    ) -> Result<PersonalAccessToken, MetaError> {
        let mut w = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO personal_access_tokens (user_id, name, token_hash, scopes, expires_at, revoked, created_at) \
             VALUES ($1, $2, $3, $4, $5, 0, $6)",
        )
        .bind(user_id)
        .bind(name)
        .bind(token_hash)
        .bind(scopes.join(","))
        .bind(expires_at)
        .bind(now_millis())
        .execute(&mut *w.tx)
        .await
        .map_err(|e| conflict(e, "token collision; try again"))?;
        w.commit().await?;
        let row = sqlx::query("SELECT * FROM personal_access_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_one(&self.pool)
            .await?;
        Ok(pat_from_row(&row))
    }

    /// The token with this hash, with its owner.
    /// Replaces an active token by a new one with the same owner, name and scopes, in one
    /// transaction: the old one is revoked exactly when the new one exists. A token revoked
    /// meanwhile (a concurrent rotation) is a conflict, so one rotation wins.
    pub async fn rotate_personal_access_token(
        &self,
        old: &PersonalAccessToken,
        token_hash: &str,
        expires_at: Option<i64>,
    ) -> Result<PersonalAccessToken, MetaError> {
        let mut w = self.write_tx().await?;
        let revoked = sqlx::query(
            "UPDATE personal_access_tokens SET revoked = 1 WHERE id = $1 AND revoked = 0",
        )
        .bind(old.id)
        .execute(&mut *w.tx)
        .await?;
        if revoked.rows_affected() == 0 {
            return Err(MetaError::Conflict("the token was revoked meanwhile".into()));
        }
        sqlx::query(
            "INSERT INTO personal_access_tokens (user_id, name, token_hash, scopes, expires_at, revoked, created_at) \
             VALUES ($1, $2, $3, $4, $5, 0, $6)",
        )
        .bind(old.user_id)
        .bind(&old.name)
        .bind(token_hash)
        .bind(old.scopes.join(","))
        .bind(expires_at)
        .bind(now_millis())
        .execute(&mut *w.tx)
        .await
        .map_err(|e| conflict(e, "token collision; try again"))?;
        w.commit().await?;
        let row = sqlx::query("SELECT * FROM personal_access_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_one(&self.pool)
            .await?;
        Ok(pat_from_row(&row))
    }

    pub async fn personal_access_token_by_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<(PersonalAccessToken, String)>, MetaError> {
        let row = sqlx::query("SELECT * FROM personal_access_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (pat_from_row(&r), r.get::<String, _>("token_hash"))))
    }

    pub async fn list_personal_access_tokens(
        &self,
        user_id: i64,
    ) -> Result<Vec<PersonalAccessToken>, MetaError> {
        let rows =
            sqlx::query("SELECT * FROM personal_access_tokens WHERE user_id = $1 ORDER BY id")
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.iter().map(pat_from_row).collect())
    }

    pub async fn personal_access_token_by_id(
        &self,
        id: i64,
    ) -> Result<Option<PersonalAccessToken>, MetaError> {
        let row = sqlx::query("SELECT * FROM personal_access_tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(pat_from_row))
    }

    pub async fn revoke_personal_access_token(&self, id: i64) -> Result<bool, MetaError> {
        let mut w = self.write_tx().await?;
        let r = sqlx::query("UPDATE personal_access_tokens SET revoked = 1 WHERE id = $1")
            .bind(id)
            .execute(&mut *w.tx)
            .await?;
        w.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    /// Records a use of the token (at most once a minute, to keep logins write-light).
    pub async fn touch_personal_access_token(&self, id: i64) -> Result<(), MetaError> {
        let now = now_millis();
        // Bookkeeping on every authenticated request (a write at most once a minute): not a
        // write garbage collection gives way to.
        let mut w = self.background_write_tx().await?;
        sqlx::query(
            "UPDATE personal_access_tokens SET last_used_at = $1 WHERE id = $2 \
             AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(now)
        .bind(id)
        .bind(now - 60_000)
        .execute(&mut *w.tx)
        .await?;
        w.commit().await
    }

    // ---- deploy tokens ------------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    pub async fn create_deploy_token(
        &self,
        source_type: SourceType,
        source_id: i64,
        name: &str,
        username: &str,
        token_hash: &str,
        scopes: &[String],
        expires_at: Option<i64>,
    ) -> Result<DeployToken, MetaError> {
        let mut w = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO deploy_tokens (source_type, source_id, name, username, token_hash, scopes, expires_at, revoked, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8)",
        )
        .bind(source_type.as_str())
        .bind(source_id)
        .bind(name)
        .bind(username)
        .bind(token_hash)
        .bind(scopes.join(","))
        .bind(expires_at)
        .bind(now_millis())
        .execute(&mut *w.tx)
        .await
        .map_err(|e| conflict(e, format!("a deploy token with username {username} already exists")))?;
        w.commit().await?;
        self.deploy_token_by_username(username).await?.ok_or(MetaError::NotFound("deploy token"))
    }

    pub async fn deploy_token_by_username(
        &self,
        username: &str,
    ) -> Result<Option<DeployToken>, MetaError> {
        let row = sqlx::query("SELECT * FROM deploy_tokens WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(deploy_from_row))
    }

    pub async fn deploy_token_by_id(&self, id: i64) -> Result<Option<DeployToken>, MetaError> {
        let row = sqlx::query("SELECT * FROM deploy_tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(deploy_from_row))
    }

    pub async fn list_deploy_tokens(
        &self,
        source_type: SourceType,
        source_id: i64,
    ) -> Result<Vec<DeployToken>, MetaError> {
        let rows = sqlx::query(
            "SELECT * FROM deploy_tokens WHERE source_type = $1 AND source_id = $2 ORDER BY id",
        )
        .bind(source_type.as_str())
        .bind(source_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(deploy_from_row).collect())
    }

    /// Every deploy token of the instance, of groups and projects alike (`GET /deploy_tokens`).
    pub async fn list_all_deploy_tokens(&self) -> Result<Vec<DeployToken>, MetaError> {
        let rows =
            sqlx::query("SELECT * FROM deploy_tokens ORDER BY id").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(deploy_from_row).collect())
    }

    pub async fn revoke_deploy_token(
        &self,
        source_type: SourceType,
        source_id: i64,
        id: i64,
    ) -> Result<bool, MetaError> {
        let mut w = self.write_tx().await?;
        let r = sqlx::query(
            "UPDATE deploy_tokens SET revoked = 1 WHERE id = $1 AND source_type = $2 AND source_id = $3",
        )
        .bind(id)
        .bind(source_type.as_str())
        .bind(source_id)
        .execute(&mut *w.tx)
        .await?;
        w.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    // ---- CI job tokens ------------------------------------------------------------------

    pub async fn create_job_token(
        &self,
        project_id: i64,
        user_id: Option<i64>,
        token_hash: &str,
        expires_at: i64,
    ) -> Result<JobToken, MetaError> {
        let mut w = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO job_tokens (project_id, user_id, token_hash, expires_at, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(project_id)
        .bind(user_id)
        .bind(token_hash)
        .bind(expires_at)
        .bind(now_millis())
        .execute(&mut *w.tx)
        .await?;
        w.commit().await?;
        self.job_token_by_hash(token_hash).await?.ok_or(MetaError::NotFound("job token"))
    }

    pub async fn job_token_by_id(&self, id: i64) -> Result<Option<JobToken>, MetaError> {
        let row = sqlx::query("SELECT * FROM job_tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(job_from_row))
    }

    pub async fn job_token_by_hash(&self, token_hash: &str) -> Result<Option<JobToken>, MetaError> {
        let row = sqlx::query("SELECT * FROM job_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(job_from_row))
    }

    /// Lets job tokens of `source_project_id` pull from `project_id`.
    pub async fn allow_job_token_source(
        &self,
        project_id: i64,
        source_project_id: i64,
    ) -> Result<(), MetaError> {
        let mut w = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO job_token_allowlist (project_id, source_project_id, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (project_id, source_project_id) DO NOTHING",
        )
        .bind(project_id)
        .bind(source_project_id)
        .bind(now_millis())
        .execute(&mut *w.tx)
        .await?;
        w.commit().await
    }

    pub async fn disallow_job_token_source(
        &self,
        project_id: i64,
        source_project_id: i64,
    ) -> Result<bool, MetaError> {
        let mut w = self.write_tx().await?;
        let r = sqlx::query(
            "DELETE FROM job_token_allowlist WHERE project_id = $1 AND source_project_id = $2",
        )
        .bind(project_id)
        .bind(source_project_id)
        .execute(&mut *w.tx)
        .await?;
        w.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn job_token_allowlist(&self, project_id: i64) -> Result<Vec<i64>, MetaError> {
        let rows = sqlx::query(
            "SELECT source_project_id FROM job_token_allowlist WHERE project_id = $1 ORDER BY source_project_id",
        )
        .bind(project_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| get_i64(r, "source_project_id")).collect())
    }

    pub async fn job_token_allowed(
        &self,
        project_id: i64,
        source_project_id: i64,
    ) -> Result<bool, MetaError> {
        let row = sqlx::query(
            "SELECT project_id FROM job_token_allowlist WHERE project_id = $1 AND source_project_id = $2",
        )
        .bind(project_id)
        .bind(source_project_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    // ---- signing keys -------------------------------------------------------------------

    /// The oldest signing key, if any.
    pub async fn signing_key(&self) -> Result<Option<SigningKey>, MetaError> {
        let row = sqlx::query("SELECT * FROM signing_keys ORDER BY created_at, kid LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| SigningKey {
            kid: r.get("kid"),
            algorithm: r.get("algorithm"),
            private_der: r.get("private_der"),
        }))
    }

    /// Stores `key` unless one exists already; returns the key every instance should use.
    pub async fn ensure_signing_key(&self, key: &SigningKey) -> Result<SigningKey, MetaError> {
        if let Some(existing) = self.signing_key().await? {
            return Ok(existing);
        }
        let mut w = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, private_der, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (kid) DO NOTHING",
        )
        .bind(&key.kid)
        .bind(&key.algorithm)
        .bind(&key.private_der)
        .bind(now_millis())
        .execute(&mut *w.tx)
        .await?;
        w.commit().await?;
        self.signing_key().await?.ok_or(MetaError::NotFound("signing key"))
    }
}

#[cfg(test)]
mod tests {
    use super::path_prefixes;

    #[test]
    fn prefixes() {
        assert_eq!(path_prefixes("a/b/c"), vec!["a", "a/b", "a/b/c"]);
        assert_eq!(path_prefixes("a"), vec!["a"]);
        assert!(path_prefixes("").is_empty());
    }
}
