//! Cleanup policies (GitLab's `container_expiration_policy`) and the bulk tag delete: which
//! settings a policy may have ([`plan_policy_update`]), which tags a policy or a bulk delete
//! takes ([`TagCleanup`]), and what a policy would delete now ([`dry_run`]). The REST API
//! (`PUT /projects/:id`, `.../cleanup_policy/dry_run`, the bulk tag delete, the scheduled
//! runs) and the web UI's settings page all decide through these functions.
//!
//! Rules, in GitLab's order: never `latest`; whole-name regexes; the `keep_n` newest kept;
//! only tags older than `older_than`; and a policy never deletes a tag that a protection or
//! immutable rule covers.

use meta::{CleanupPolicy, Project, Store};
use regex::Regex;
use serde::Serialize;

use meta::events::AuditEntity;
use serde_json::json;

use crate::settings::{record_change, require_maintainer, Changed, SettingsError};
use crate::RequestContext;

/// One day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;
/// GitLab's cadences, with their period.
pub const CADENCES: &[(&str, i64)] = &[
    ("1d", DAY_MS),
    ("7d", 7 * DAY_MS),
    ("14d", 14 * DAY_MS),
    ("1month", 30 * DAY_MS),
    ("3month", 90 * DAY_MS),
];
/// GitLab's choices of `keep_n`.
pub const KEEP_N: &[i64] = &[1, 5, 10, 25, 50, 100];
/// GitLab's choices of `older_than`.
pub const OLDER_THAN: &[&str] = &["7d", "14d", "30d", "90d"];

/// The period of a cadence, if it is one of [`CADENCES`].
pub fn cadence_ms(cadence: &str) -> Option<i64> {
    CADENCES.iter().find(|(name, _)| *name == cadence).map(|(_, ms)| *ms)
}

fn one_of<T: std::fmt::Display>(field: &str, values: &[T]) -> SettingsError {
    let list = values.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ");
    SettingsError::invalid(format!(
        "container_expiration_policy_attributes {field} must be one of {list}"
    ))
}

// ---- settings -------------------------------------------------------------------------------

/// A change to a policy's settings; `None` leaves a setting as it is, `Some(None)` clears
/// `keep_n` or `older_than` (keep any number, delete at any age), an empty regex clears it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyChanges {
    pub enabled: Option<bool>,
    pub cadence: Option<String>,
    pub keep_n: Option<Option<i64>>,
    pub older_than: Option<Option<String>>,
    /// `name_regex` (GitLab's newer name: `name_regex_delete`).
    pub name_regex: Option<String>,
    pub name_regex_keep: Option<String>,
}

/// The policy a project runs: its saved one or GitLab's defaults.
pub async fn policy_of(store: &Store, project_id: i64) -> Result<CleanupPolicy, SettingsError> {
    Ok(store
        .cleanup_policy(project_id)
        .await?
        .unwrap_or_else(|| CleanupPolicy::default_for(project_id)))
}

/// The policy `changes` make of `project`'s at time `now`, fully validated, without saving
/// it, for a caller whose role on the project is `level` (maintainers and above may).
pub async fn plan_policy_update(
    store: &Store,
    level: i64,
    project: &Project,
    changes: PolicyChanges,
    now: i64,
) -> Result<CleanupPolicy, SettingsError> {
    require_maintainer(level, "changing a cleanup policy")?;
    let mut p = policy_of(store, project.id).await?;
    let before = (p.enabled, p.cadence.clone());
    if let Some(enabled) = changes.enabled {
        p.enabled = enabled;
    }
    if let Some(cadence) = changes.cadence {
        if cadence_ms(&cadence).is_none() {
            let names: Vec<&str> = CADENCES.iter().map(|(n, _)| *n).collect();
            return Err(one_of("cadence", &names));
        }
        p.cadence = cadence;
    }
    if let Some(keep_n) = changes.keep_n {
        if keep_n.is_some_and(|n| !KEEP_N.contains(&n)) {
            return Err(one_of("keep_n", KEEP_N));
        }
        p.keep_n = keep_n;
    }
    if let Some(older_than) = changes.older_than {
        if older_than.as_deref().is_some_and(|o| !OLDER_THAN.contains(&o)) {
            return Err(one_of("older_than", OLDER_THAN));
        }
        p.older_than = older_than;
    }
    if let Some(regex) = changes.name_regex {
        p.name_regex = Some(regex).filter(|r| !r.is_empty());
    }
    if let Some(regex) = changes.name_regex_keep {
        p.name_regex_keep = Some(regex).filter(|r| !r.is_empty());
    }
    // Invalid regexes are refused now rather than failing every run.
    tag_cleanup(&p)?;
    if !p.enabled {
        p.next_run_at = None;
        if p.run_status != "unfinished" {
            p.run_status = "unscheduled".into();
        }
    } else if before != (p.enabled, p.cadence.clone()) || p.next_run_at.is_none() {
        p.next_run_at = Some(now + cadence_ms(&p.cadence).unwrap_or(DAY_MS));
        if p.run_status != "unfinished" {
            p.run_status = "scheduled".into();
        }
    }
    Ok(p)
}

/// Plans and saves (see [`plan_policy_update`] and [`save_policy`]).
pub async fn update_policy(
    store: &Store,
    level: i64,
    project: &Project,
    changes: PolicyChanges,
    now: i64,
    ctx: &RequestContext,
) -> Result<CleanupPolicy, SettingsError> {
    let policy = plan_policy_update(store, level, project, changes, now).await?;
    save_policy(store, project, &policy, ctx).await?;
    Ok(policy)
}

/// Saves a policy [`plan_policy_update`] planned and records the change (for `ctx`) in the
/// project's audit log.
pub async fn save_policy(
    store: &Store,
    project: &Project,
    policy: &CleanupPolicy,
    ctx: &RequestContext,
) -> Result<(), SettingsError> {
    store.save_cleanup_policy(policy).await?;
    let changed = Changed {
        entity: AuditEntity::project(project.id, &project.full_path),
        action: "cleanup_policy_change",
        target_type: "CleanupPolicy",
        target_id: project.id.to_string(),
        target_details: project.full_path.clone(),
        details: json!({ "enabled": policy.enabled }),
    };
    record_change(store, ctx, changed).await;
    Ok(())
}

/// What a policy deletes, as the bulk tag delete understands it. `None`: a policy without
/// `name_regex` deletes nothing.
pub fn tag_cleanup(p: &CleanupPolicy) -> Result<Option<TagCleanup>, SettingsError> {
    let Some(delete) = p.name_regex.as_deref().filter(|r| !r.is_empty()) else { return Ok(None) };
    TagCleanup::new(Some(delete), p.name_regex_keep.as_deref(), p.keep_n, p.older_than.as_deref())
        .map(Some)
}

// ---- deciding -------------------------------------------------------------------------------

/// One tag a policy deletes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DoomedTag {
    pub repository: String,
    pub name: String,
}

/// The tags of `repository` that `cleanup` deletes at `now`, without protected ones.
pub async fn doomed_in(
    store: &Store,
    project: &Project,
    repository: &str,
    cleanup: &TagCleanup,
    now: i64,
) -> Result<Vec<String>, SettingsError> {
    let tags: Vec<(String, i64)> = store
        .published_tags(repository)
        .await?
        .into_iter()
        .map(|t| (t.name, t.published_at))
        .collect();
    let doomed = cleanup.doomed(&tags, now);
    if doomed.is_empty() {
        return Ok(doomed);
    }
    let protection = store.protection_in_project(project.clone(), repository).await?;
    Ok(doomed.into_iter().filter(|t| !protection.protects_from_cleanup(t)).collect())
}

/// Exactly what `project`'s policy would delete if it ran to the end at `now` (the caller
/// decided that the viewer may know).
pub async fn dry_run(
    store: &Store,
    project: &Project,
    now: i64,
) -> Result<Vec<DoomedTag>, SettingsError> {
    let policy = policy_of(store, project.id).await?;
    let Some(cleanup) = tag_cleanup(&policy)? else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for repository in store.project_repository_names(project, None).await? {
        for name in doomed_in(store, project, &repository, &cleanup, now).await? {
            out.push(DoomedTag { repository: repository.clone(), name });
        }
    }
    Ok(out)
}

// ---- which tags go --------------------------------------------------------------------------

/// Which tags a bulk delete or a cleanup policy removes: GitLab's rules.
#[derive(Clone, Debug)]
pub struct TagCleanup {
    delete: Regex,
    keep: Option<Regex>,
    keep_n: Option<usize>,
    older_than_ms: Option<i64>,
}

/// The tag a bulk delete never removes.
pub const LATEST: &str = "latest";

/// An RE2-style regex matched against the whole tag name. The pattern must be a regex on its
/// own: wrapped unchecked, `a)|(b` would compile as `^(?:a)|(b)$`, which is not anchored.
fn whole_name_regex(field: &str, pattern: &str) -> Result<Regex, SettingsError> {
    meta::tag_regex(pattern).and_then(|_| meta::tag_regex(&format!("^(?:{pattern})$"))).map_err(
        |e| {
            SettingsError::invalid(format!(
                "{field} is not a valid regular expression (RE2 syntax): {}",
                e.to_string().lines().last().unwrap_or("invalid")
            ))
        },
    )
}

impl TagCleanup {
    pub fn new(
        name_regex_delete: Option<&str>,
        name_regex_keep: Option<&str>,
        keep_n: Option<i64>,
        older_than: Option<&str>,
    ) -> Result<TagCleanup, SettingsError> {
        let delete = match name_regex_delete {
            Some(p) => whole_name_regex("name_regex_delete", p)?,
            None => {
                return Err(SettingsError::invalid(
                    "name_regex_delete is missing: give a regular expression of the tags to delete, e.g. name_regex_delete=.*",
                ))
            }
        };
        let keep = name_regex_keep
            .filter(|p| !p.is_empty())
            .map(|p| whole_name_regex("name_regex_keep", p))
            .transpose()?;
        let keep_n = match keep_n {
            Some(n) if n < 0 => {
                return Err(SettingsError::invalid("keep_n must be 0 or a positive number"))
            }
            Some(n) => Some(n as usize),
            None => None,
        };
        let older_than_ms =
            older_than.filter(|t| !t.trim().is_empty()).map(parse_duration_ms).transpose()?;
        Ok(TagCleanup { delete, keep, keep_n, older_than_ms })
    }

    /// The tags (name, published time in ms) to delete at `now`, in GitLab's order of rules:
    /// never `latest`; only names matching the delete regex and not the keep regex; of those,
    /// the `keep_n` most recently published stay (ties broken by name, the later name counting
    /// as newer — the order of `sort=-published_at`); and only tags published before
    /// `now - older_than` go.
    pub fn doomed(&self, tags: &[(String, i64)], now: i64) -> Vec<String> {
        let mut candidates: Vec<&(String, i64)> = tags
            .iter()
            .filter(|(name, _)| name != LATEST)
            .filter(|(name, _)| self.delete.is_match(name))
            .filter(|(name, _)| !self.keep.as_ref().is_some_and(|k| k.is_match(name)))
            .collect();
        candidates.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
        let skip = self.keep_n.unwrap_or(0).min(candidates.len());
        candidates
            .into_iter()
            .skip(skip)
            .filter(|(_, published)| self.older_than_ms.is_none_or(|age| *published < now - age))
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// `90s`, `30m`/`30min`, `1h`, `7d`, `2w`, `1month` (30 days), `1y` (365 days); the unit may
/// be spelt out (`7days`, `1 hour`).
pub fn parse_duration_ms(text: &str) -> Result<i64, SettingsError> {
    let bad = || {
        SettingsError::invalid(format!(
            "older_than {} is not a duration: use a number and a unit, e.g. 1h, 7d, 2w or 1month",
            oci::preview(text)
        ))
    };
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let amount: i64 = text[..split].parse().map_err(|_| bad())?;
    let unit = text[split..].trim().to_ascii_lowercase();
    let seconds: i64 = match unit.as_str() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 7 * 86_400,
        "mo" | "month" | "months" => 30 * 86_400,
        "y" | "year" | "years" => 365 * 86_400,
        _ => return Err(bad()),
    };
    amount.checked_mul(seconds * 1000).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[(&str, i64)]) -> Vec<(String, i64)> {
        list.iter().map(|(n, t)| (n.to_string(), *t)).collect()
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[test]
    fn cleanup_rules() {
        let all = tags(&[("latest", 1), ("v1", 10), ("v2", 20), ("v3", 30), ("dev", 5)]);
        let c = TagCleanup::new(Some(".*"), None, None, None).unwrap();
        assert_eq!(sorted(c.doomed(&all, 100)), ["dev", "v1", "v2", "v3"]);
        let c = TagCleanup::new(Some("v.*"), Some("v2"), None, None).unwrap();
        assert_eq!(sorted(c.doomed(&all, 100)), ["v1", "v3"]);
        // Anchored: `v` alone matches no tag.
        let c = TagCleanup::new(Some("v"), None, None, None).unwrap();
        assert!(c.doomed(&all, 100).is_empty());
        let c = TagCleanup::new(Some(".*"), None, Some(2), None).unwrap();
        assert_eq!(sorted(c.doomed(&all, 100)), ["dev", "v1"]);
        let c = TagCleanup::new(Some(".*"), None, None, Some("1s")).unwrap();
        assert_eq!(sorted(c.doomed(&all, 1015)), ["dev", "v1"]);
        // Ties on published time: the later name counts as newer.
        let tied = tags(&[("a", 7), ("b", 7), ("c", 7)]);
        let c = TagCleanup::new(Some(".*"), None, Some(1), None).unwrap();
        assert_eq!(sorted(c.doomed(&tied, 100)), ["a", "b"]);
        assert!(TagCleanup::new(Some("(["), None, None, None).is_err());
        assert!(TagCleanup::new(None, None, None, None).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("1h").unwrap(), 3_600_000);
        assert_eq!(parse_duration_ms("7d").unwrap(), 7 * 86_400_000);
        assert_eq!(parse_duration_ms("1month").unwrap(), 30 * 86_400_000);
        assert_eq!(parse_duration_ms("2 weeks").unwrap(), 14 * 86_400_000);
        assert!(parse_duration_ms("soon").is_err());
        assert!(parse_duration_ms("7").is_err());
    }
}
