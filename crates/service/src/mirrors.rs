//! Pull mirrors: the one reading of a mirror's `upstream` (the REST API checks it when a
//! mirror is saved, the sync job uses it to reach the upstream).

/// The upstream URL split into the registry's base URL and the repository path.
pub fn split_upstream(text: &str) -> Result<(url::Url, String), String> {
    let url: url::Url = text.parse().map_err(|e| format!("is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("must be an http or https URL of a repository, e.g. \
                    https://registry.example.com/team/svc"
            .into());
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
        return Err("must not hold credentials or a query".into());
    }
    let repository = url.path().trim_matches('/').to_string();
    if repository.parse::<oci::RepositoryName>().is_err() {
        return Err("must end in the path of a repository, e.g. /team/svc".into());
    }
    let mut base = url.clone();
    base.set_path("");
    Ok((base, repository))
}
