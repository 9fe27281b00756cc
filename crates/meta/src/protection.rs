//! Protection rules: who may push or delete which repositories and tags of a project, and
//! which tags are immutable. Rules are stored here and evaluated here, so the `/v2` handlers,
//! the REST API and cleanup all refuse the same things with the same words.
//!
//! - A repository rule matches repositories by full path, `*` matching any run of characters.
//! - A tag rule matches tag names with a regex (RE2 syntax, unanchored as in GitLab: anchor it
//!   with `^…$` to match whole names). Of several matching rules the most restrictive wins.
//! - An immutable tag rule lets a matching tag be created once; after that nobody may move it
//!   to another manifest or delete it. While a project has one, no manifest of it may be
//!   deleted by digest (that could take an immutable tag's image along).

use regex::{Regex, RegexBuilder};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::store::{get_i64, MetaError, Store};
use crate::{access_level, now_millis, path_prefixes, Project};

/// The instance admin's level in rules (`minimum_access_level_*: admin`): above owners.
pub const ADMIN_ACCESS_LEVEL: i64 = access_level::ADMIN;

/// At most this many tag rules (protection and immutable together) per project.
pub const MAX_TAG_RULES_PER_PROJECT: usize = 5;
/// Longest `tag_name_pattern` accepted.
pub const MAX_TAG_PATTERN_CHARS: usize = 100;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepositoryProtectionRule {
    pub id: i64,
    pub project_id: i64,
    pub repository_path_pattern: String,
    pub minimum_access_level_for_push: Option<i64>,
    pub minimum_access_level_for_delete: Option<i64>,
    pub created_at: i64,
}

impl RepositoryProtectionRule {
    /// Whether the rule covers repository `name` (a full path).
    pub fn matches(&self, name: &str) -> bool {
        wildcard_match(&self.repository_path_pattern, name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagProtectionRule {
    pub id: i64,
    pub project_id: i64,
    pub tag_name_pattern: String,
    pub minimum_access_level_for_push: Option<i64>,
    pub minimum_access_level_for_delete: Option<i64>,
    pub immutable: bool,
    pub created_at: i64,
}

/// The fields of a rule to create or the new values of one to change.
#[derive(Clone, Debug, Default)]
pub struct RuleLevels {
    pub push: Option<i64>,
    pub delete: Option<i64>,
}

/// `*` matches any run of characters (including `/`); everything else matches itself.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// Compiled size a tag-name regex may take, in bytes. Tags are at most 128 characters, so a
/// useful pattern is tiny; the cap bounds the time and memory a hostile one costs to compile
/// (a rule's pattern is compiled on every push it guards), and such a pattern is refused
/// when it is given, with the regex crate's reason.
pub const TAG_REGEX_SIZE_LIMIT: usize = 1 << 20;

/// THE compiler of the tag-name regexes users give: tag protection patterns, cleanup
/// policies' and bulk deletes' `name_regex…`. RE2 syntax: the `regex` crate matches in time
/// linear in the tag, whatever the pattern; compiled size and nesting depth are bounded here.
pub fn tag_regex(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .size_limit(TAG_REGEX_SIZE_LIMIT)
        .dfa_size_limit(TAG_REGEX_SIZE_LIMIT)
        .nest_limit(64)
        .build()
}

/// Compiles a tag pattern as the rules use it; `Err` is a sentence for the user.
pub fn compile_tag_pattern(pattern: &str) -> Result<Regex, String> {
    if pattern.is_empty() {
        return Err("tag_name_pattern is required".into());
    }
    if pattern.chars().count() > MAX_TAG_PATTERN_CHARS {
        return Err(format!(
            "tag_name_pattern is too long (at most {MAX_TAG_PATTERN_CHARS} characters)"
        ));
    }
    tag_regex(pattern).map_err(|e| {
        format!("tag_name_pattern {pattern:?} is not a valid RE2 regular expression: {e}")
    })
}

/// The name of an access level in rules and messages.
pub fn rule_level_name(level: i64) -> &'static str {
    match level {
        access_level::MAINTAINER => "maintainer",
        access_level::OWNER => "owner",
        ADMIN_ACCESS_LEVEL => "admin",
        access_level::DEVELOPER => "developer",
        _ => "unknown",
    }
}

/// Why a push or delete was refused; `message` names the rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    pub message: String,
}

impl Refusal {
    /// Several refusals of one request (a multi-select delete) as one: the first's kind, every
    /// message. `None` when there are none.
    pub fn all(refusals: Vec<Refusal>) -> Option<Refusal> {
        let kind = refusals.first()?.kind;
        let messages: Vec<String> = refusals.into_iter().map(|r| r.message).collect();
        Some(Refusal { kind, message: messages.join("; ") })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    /// A repository protection rule (OCI `DENIED`).
    Repository,
    /// A tag protection rule (OCI `PROTECTED_TAG`).
    Tag,
    /// An immutable tag rule (OCI `IMMUTABLE_TAG`).
    Immutable,
    /// A manifest delete that would take protected or immutable tags along
    /// (OCI `PROTECTED_MANIFEST`).
    Manifest,
}

/// The rules that apply to one repository, loaded once per request.
#[derive(Clone, Debug)]
pub struct RepositoryProtection {
    pub project: Project,
    pub repository: String,
    /// Repository rules that match this repository.
    pub repository_rules: Vec<RepositoryProtectionRule>,
    /// Every tag rule of the project, compiled.
    pub tag_rules: Vec<(TagProtectionRule, Regex)>,
}

impl RepositoryProtection {
    /// No rule at all: nothing is refused.
    pub fn is_empty(&self) -> bool {
        self.repository_rules.is_empty() && self.tag_rules.is_empty()
    }

    pub fn has_immutable_rules(&self) -> bool {
        self.tag_rules.iter().any(|(r, _)| r.immutable)
    }

    fn repository_check(
        &self,
        level: i64,
        needed: impl Fn(&RepositoryProtectionRule) -> Option<i64>,
        verb: &str,
    ) -> Result<(), Refusal> {
        let strictest = self
            .repository_rules
            .iter()
            .filter_map(|r| needed(r).map(|n| (n, r)))
            .max_by_key(|(n, _)| *n);
        match strictest {
            Some((n, rule)) if level < n => Err(Refusal {
                kind: RefusalKind::Repository,
                message: format!(
                    "repository {} is protected by rule {:?}: only {} and above may {verb} it",
                    self.repository,
                    rule.repository_path_pattern,
                    plural(n)
                ),
            }),
            _ => Ok(()),
        }
    }

    fn tag_check(
        &self,
        tag: &str,
        level: i64,
        needed: impl Fn(&TagProtectionRule) -> Option<i64>,
        verb: &str,
    ) -> Result<(), Refusal> {
        let strictest = self
            .tag_rules
            .iter()
            .filter(|(r, re)| !r.immutable && re.is_match(tag))
            .filter_map(|(r, _)| needed(r).map(|n| (n, r)))
            .max_by_key(|(n, _)| *n);
        match strictest {
            Some((n, rule)) if level < n => Err(Refusal {
                kind: RefusalKind::Tag,
                message: format!(
                    "tag {tag} is protected by rule {:?}: only {} and above may {verb} it",
                    rule.tag_name_pattern,
                    plural(n)
                ),
            }),
            _ => Ok(()),
        }
    }

    fn immutable_rule(&self, tag: &str) -> Option<&TagProtectionRule> {
        self.tag_rules.iter().find(|(r, re)| r.immutable && re.is_match(tag)).map(|(r, _)| r)
    }

    /// Whether an immutable rule covers `tag`.
    pub fn is_immutable(&self, tag: &str) -> bool {
        self.immutable_rule(tag).is_some()
    }

    /// Whether any tag rule (protection or immutable) covers `tag`: cleanup policies never
    /// delete such tags, as in GitLab.
    pub fn protects_from_cleanup(&self, tag: &str) -> bool {
        self.tag_rules.iter().any(|(_, re)| re.is_match(tag))
    }

    /// May a caller at `level` push a manifest to this repository, pointing `tag` (if any) at
    /// it? `moves_existing` says whether `tag` exists and points at another manifest now.
    pub fn check_push(
        &self,
        tag: Option<&str>,
        moves_existing: bool,
        level: i64,
    ) -> Result<(), Refusal> {
        self.repository_check(level, |r| r.minimum_access_level_for_push, "push to")?;
        let Some(tag) = tag else { return Ok(()) };
        if moves_existing {
            if let Some(rule) = self.immutable_rule(tag) {
                return Err(Refusal {
                    kind: RefusalKind::Immutable,
                    message: format!(
                        "tag {tag} is immutable (rule {:?}): it cannot be moved to another manifest; push a new tag instead",
                        rule.tag_name_pattern
                    ),
                });
            }
        }
        self.tag_check(tag, level, |r| r.minimum_access_level_for_push, "push")
    }

    /// May a caller at `level` delete tag `tag` of this repository?
    pub fn check_tag_delete(&self, tag: &str, level: i64) -> Result<(), Refusal> {
        if let Some(rule) = self.immutable_rule(tag) {
            return Err(Refusal {
                kind: RefusalKind::Immutable,
                message: format!(
                    "tag {tag} is immutable (rule {:?}): nobody can delete it",
                    rule.tag_name_pattern
                ),
            });
        }
        self.repository_check(level, |r| r.minimum_access_level_for_delete, "delete from")?;
        self.tag_check(tag, level, |r| r.minimum_access_level_for_delete, "delete")
    }

    /// May a caller at `level` delete the whole repository (the REST API's repository delete,
    /// the registry page's)?
    pub fn check_repository_delete(&self, level: i64) -> Result<(), Refusal> {
        self.repository_check(level, |r| r.minimum_access_level_for_delete, "delete")
    }

    /// May a caller at `level` delete a manifest by digest, with every tag in `tags` (those
    /// pointing at it)?
    pub fn check_manifest_delete(&self, tags: &[String], level: i64) -> Result<(), Refusal> {
        self.repository_check(level, |r| r.minimum_access_level_for_delete, "delete from")?;
        if let Some((rule, _)) = self.tag_rules.iter().find(|(r, _)| r.immutable) {
            return Err(Refusal {
                kind: RefusalKind::Manifest,
                message: format!(
                    "project {} has an immutable tag rule ({:?}), so manifests cannot be deleted by digest; delete tags instead",
                    self.project.full_path, rule.tag_name_pattern
                ),
            });
        }
        for tag in tags {
            if let Err(refusal) =
                self.tag_check(tag, level, |r| r.minimum_access_level_for_delete, "delete")
            {
                return Err(Refusal {
                    kind: RefusalKind::Manifest,
                    message: format!("the manifest cannot be deleted: {}", refusal.message),
                });
            }
        }
        Ok(())
    }
}

fn plural(level: i64) -> String {
    match level {
        ADMIN_ACCESS_LEVEL => "instance admins".into(),
        other => format!("{}s", rule_level_name(other)),
    }
}

fn repository_rule_from_row(r: &AnyRow) -> RepositoryProtectionRule {
    RepositoryProtectionRule {
        id: get_i64(r, "id"),
        project_id: get_i64(r, "project_id"),
        repository_path_pattern: r.get("repository_path_pattern"),
        minimum_access_level_for_push: r.get::<Option<i64>, _>("minimum_access_level_for_push"),
        minimum_access_level_for_delete: r.get::<Option<i64>, _>("minimum_access_level_for_delete"),
        created_at: get_i64(r, "created_at"),
    }
}

fn tag_rule_from_row(r: &AnyRow) -> TagProtectionRule {
    TagProtectionRule {
        id: get_i64(r, "id"),
        project_id: get_i64(r, "project_id"),
        tag_name_pattern: r.get("tag_name_pattern"),
        minimum_access_level_for_push: r.get::<Option<i64>, _>("minimum_access_level_for_push"),
        minimum_access_level_for_delete: r.get::<Option<i64>, _>("minimum_access_level_for_delete"),
        immutable: get_i64(r, "immutable") != 0,
        created_at: get_i64(r, "created_at"),
    }
}

fn unique_violation(e: sqlx::Error, what: String) -> MetaError {
    let unique = match &e {
        sqlx::Error::Database(db) => {
            db.kind() == sqlx::error::ErrorKind::UniqueViolation
                || db.message().contains("UNIQUE")
                || db.message().contains("duplicate key")
        }
        _ => false,
    };
    if unique {
        MetaError::Conflict(what)
    } else {
        MetaError::Database(e)
    }
}

impl Store {
    // ---- repository protection rules ----------------------------------------------------

    pub async fn repository_protection_rules(
        &self,
        project_id: i64,
    ) -> Result<Vec<RepositoryProtectionRule>, MetaError> {
        let rows = sqlx::query(
            "SELECT * FROM repository_protection_rules WHERE project_id = $1 ORDER BY id",
        )
        .bind(project_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(repository_rule_from_row).collect())
    }

    pub async fn repository_protection_rule(
        &self,
        project_id: i64,
        id: i64,
    ) -> Result<Option<RepositoryProtectionRule>, MetaError> {
        let row = sqlx::query(
            "SELECT * FROM repository_protection_rules WHERE project_id = $1 AND id = $2",
        )
        .bind(project_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(repository_rule_from_row))
    }

    pub async fn create_repository_protection_rule(
        &self,
        project_id: i64,
        pattern: &str,
        levels: &RuleLevels,
    ) -> Result<RepositoryProtectionRule, MetaError> {
        let mut w = self.write_tx().await?;
        let row = sqlx::query(
            "INSERT INTO repository_protection_rules (project_id, repository_path_pattern, \
             minimum_access_level_for_push, minimum_access_level_for_delete, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(project_id)
        .bind(pattern)
        .bind(levels.push)
        .bind(levels.delete)
        .bind(now_millis())
        .fetch_one(&mut *w.tx)
        .await
        .map_err(|e| {
            unique_violation(
                e,
                format!("a rule for repository path pattern {pattern:?} already exists"),
            )
        })?;
        let id = get_i64(&row, "id");
        w.commit().await?;
        self.repository_protection_rule(project_id, id)
            .await?
            .ok_or(MetaError::NotFound("repository protection rule"))
    }

    pub async fn update_repository_protection_rule(
        &self,
        rule: &RepositoryProtectionRule,
    ) -> Result<RepositoryProtectionRule, MetaError> {
        let mut w = self.write_tx().await?;
        sqlx::query(
            "UPDATE repository_protection_rules SET repository_path_pattern = $1, \
             minimum_access_level_for_push = $2, minimum_access_level_for_delete = $3 \
             WHERE id = $4 AND project_id = $5",
        )
        .bind(&rule.repository_path_pattern)
        .bind(rule.minimum_access_level_for_push)
        .bind(rule.minimum_access_level_for_delete)
        .bind(rule.id)
        .bind(rule.project_id)
        .execute(&mut *w.tx)
        .await
        .map_err(|e| {
            unique_violation(
                e,
                format!(
                    "a rule for repository path pattern {:?} already exists",
                    rule.repository_path_pattern
                ),
            )
        })?;
        w.commit().await?;
        self.repository_protection_rule(rule.project_id, rule.id)
            .await?
            .ok_or(MetaError::NotFound("repository protection rule"))
    }

    pub async fn delete_repository_protection_rule(
        &self,
        project_id: i64,
        id: i64,
    ) -> Result<bool, MetaError> {
        let mut w = self.write_tx().await?;
        let done = sqlx::query(
            "DELETE FROM repository_protection_rules WHERE project_id = $1 AND id = $2",
        )
        .bind(project_id)
        .bind(id)
        .execute(&mut *w.tx)
        .await?;
        w.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    // ---- tag protection and immutable rules ---------------------------------------------

    pub async fn tag_protection_rules(
        &self,
        project_id: i64,
    ) -> Result<Vec<TagProtectionRule>, MetaError> {
        let rows =
            sqlx::query("SELECT * FROM tag_protection_rules WHERE project_id = $1 ORDER BY id")
                .bind(project_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.iter().map(tag_rule_from_row).collect())
    }

    pub async fn tag_protection_rule(
        &self,
        project_id: i64,
        id: i64,
    ) -> Result<Option<TagProtectionRule>, MetaError> {
        let row =
            sqlx::query("SELECT * FROM tag_protection_rules WHERE project_id = $1 AND id = $2")
                .bind(project_id)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.as_ref().map(tag_rule_from_row))
    }

    /// Creates a tag rule unless the project has [`MAX_TAG_RULES_PER_PROJECT`] already
    /// (`Conflict` with a message then, as for a duplicate pattern).
    pub async fn create_tag_protection_rule(
        &self,
        project_id: i64,
        pattern: &str,
        levels: &RuleLevels,
        immutable: bool,
    ) -> Result<TagProtectionRule, MetaError> {
        let mut w = self.write_tx().await?;
        let count =
            sqlx::query("SELECT COUNT(*) AS n FROM tag_protection_rules WHERE project_id = $1")
                .bind(project_id)
                .fetch_one(&mut *w.tx)
                .await?;
        if get_i64(&count, "n") as usize >= MAX_TAG_RULES_PER_PROJECT {
            return Err(MetaError::Conflict(format!(
                "a project may have at most {MAX_TAG_RULES_PER_PROJECT} tag rules; delete one first"
            )));
        }
        let row = sqlx::query(
            "INSERT INTO tag_protection_rules (project_id, tag_name_pattern, \
             minimum_access_level_for_push, minimum_access_level_for_delete, immutable, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(project_id)
        .bind(pattern)
        .bind(levels.push)
        .bind(levels.delete)
        .bind(i64::from(immutable))
        .bind(now_millis())
        .fetch_one(&mut *w.tx)
        .await
        .map_err(|e| unique_violation(e, format!("a rule for tag name pattern {pattern:?} already exists")))?;
        let id = get_i64(&row, "id");
        w.commit().await?;
        self.tag_protection_rule(project_id, id).await?.ok_or(MetaError::NotFound("tag rule"))
    }

    pub async fn update_tag_protection_rule(
        &self,
        rule: &TagProtectionRule,
    ) -> Result<TagProtectionRule, MetaError> {
        let mut w = self.write_tx().await?;
        sqlx::query(
            "UPDATE tag_protection_rules SET tag_name_pattern = $1, \
             minimum_access_level_for_push = $2, minimum_access_level_for_delete = $3 \
             WHERE id = $4 AND project_id = $5 AND immutable = 0",
        )
        .bind(&rule.tag_name_pattern)
        .bind(rule.minimum_access_level_for_push)
        .bind(rule.minimum_access_level_for_delete)
        .bind(rule.id)
        .bind(rule.project_id)
        .execute(&mut *w.tx)
        .await
        .map_err(|e| {
            unique_violation(
                e,
                format!("a rule for tag name pattern {:?} already exists", rule.tag_name_pattern),
            )
        })?;
        w.commit().await?;
        self.tag_protection_rule(rule.project_id, rule.id)
            .await?
            .ok_or(MetaError::NotFound("tag rule"))
    }

    pub async fn delete_tag_protection_rule(
        &self,
        project_id: i64,
        id: i64,
    ) -> Result<bool, MetaError> {
        let mut w = self.write_tx().await?;
        let done =
            sqlx::query("DELETE FROM tag_protection_rules WHERE project_id = $1 AND id = $2")
                .bind(project_id)
                .bind(id)
                .execute(&mut *w.tx)
                .await?;
        w.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    // ---- evaluation ---------------------------------------------------------------------

    /// The rules that apply to repository `name`, found through the project holding it (the
    /// project with the longest full path prefixing the name). `None`: no project holds it,
    /// so no rule applies.
    pub async fn protection_for_repository(
        &self,
        name: &str,
    ) -> Result<Option<RepositoryProtection>, MetaError> {
        let Some(project) = self.longest_project_match(&path_prefixes(name)).await? else {
            return Ok(None);
        };
        self.protection_in_project(project, name).await.map(Some)
    }

    /// The rules of `project` that apply to its repository `name`.
    pub async fn protection_in_project(
        &self,
        project: Project,
        name: &str,
    ) -> Result<RepositoryProtection, MetaError> {
        let repository_rules = self
            .repository_protection_rules(project.id)
            .await?
            .into_iter()
            .filter(|r| r.matches(name))
            .collect();
        let tag_rules = self
            .tag_protection_rules(project.id)
            .await?
            .into_iter()
            .filter_map(|r| match tag_regex(&r.tag_name_pattern) {
                Ok(re) => Some((r, re)),
                Err(e) => {
                    // Patterns are validated on the way in; this is only reachable if the
                    // regex crate or the limits of `tag_regex` changed what it accepts.
                    tracing::warn!(rule = r.id, error = %e, "skipping a tag rule whose pattern no longer compiles");
                    None
                }
            })
            .collect();
        Ok(RepositoryProtection {
            project,
            repository: name.to_string(),
            repository_rules,
            tag_rules,
        })
    }

    /// Names of the tags of repository `name` that point at the manifest `digest`.
    pub async fn tags_of_manifest(
        &self,
        name: &str,
        digest: &str,
    ) -> Result<Vec<String>, MetaError> {
        let rows = sqlx::query(
            "SELECT t.name FROM tags t JOIN manifests m ON m.id = t.manifest_id \
             JOIN repositories r ON r.id = t.repository_id \
             WHERE r.name = $1 AND m.digest = $2 ORDER BY t.name",
        )
        .bind(name)
        .bind(digest)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| r.get("name")).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_of_one_request_are_named_together() {
        assert_eq!(Refusal::all(Vec::new()), None);
        let tag = |m: &str| Refusal { kind: RefusalKind::Tag, message: m.to_string() };
        let immutable = Refusal { kind: RefusalKind::Immutable, message: "b is immutable".into() };
        let both = Refusal::all(vec![tag("a is protected"), immutable]).unwrap();
        assert_eq!(both.kind, RefusalKind::Tag);
        assert_eq!(both.message, "a is protected; b is immutable");
        assert_eq!(Refusal::all(vec![tag("only")]), Some(tag("only")));
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("acme/app", "acme/app"));
        assert!(!wildcard_match("acme/app", "acme/app/x"));
        assert!(wildcard_match("acme/app/*", "acme/app/x/y"));
        assert!(wildcard_match("acme/*/prod-*", "acme/app/prod-eu"));
        assert!(!wildcard_match("acme/*/prod-*", "acme/app/dev-eu"));
        assert!(wildcard_match("*", "anything"));
        assert!(!wildcard_match("a*a", "a"));
    }

    #[test]
    fn tag_patterns() {
        assert!(compile_tag_pattern("v.*").is_ok());
        assert!(compile_tag_pattern("(").is_err());
        assert!(compile_tag_pattern(&"a".repeat(101)).is_err());
        assert!(compile_tag_pattern(&"a".repeat(100)).is_ok());
        // RE2 has no backreferences.
        assert!(compile_tag_pattern(r"(a)\1").is_err());
    }
}
