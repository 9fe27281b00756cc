//! Manifest parsing and validation: OCI image manifest and index, Docker schema 2 manifest and
//! manifest list, and artifacts. Schema 1 is refused.

use serde::Deserialize;
use serde_json::Value;

use crate::{media_type as mt, Digest, MediaType};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("manifest is invalid: {0}")]
    Invalid(String),
    #[error(
        "Docker schema 1 manifests are not supported: they are deprecated and unsigned-unsafe; \
         push with a current client, which sends schema 2 or OCI manifests"
    )]
    Schema1,
    /// Holds the media type as `crate::preview` shows it.
    #[error(
        "manifest media type {0} is not supported: use an OCI or Docker schema 2 manifest or index"
    )]
    UnsupportedMediaType(String),
}

/// A content descriptor, with its digest already parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: i64,
    pub urls: Vec<String>,
    /// The declared `artifactType`; an empty one counts as missing.
    pub artifact_type: Option<String>,
    pub annotations: Option<Value>,
    /// The platform of an index entry, when it names both architecture and os.
    pub platform: Option<Platform>,
}

/// The platform an index entry is for, as far as the registry compares platforms: the
/// architecture and operating system (the keys CNCF distribution's `platformlist` uses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)
    }
}

/// Which of the manifests an index lists must already be in the repository when the index is
/// pushed: CNCF distribution's `validation.manifests.indexes.platforms`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum IndexValidation {
    /// Every listed manifest (the default; a complete index).
    #[default]
    All,
    /// None of them: a sparse index, e.g. a mirror of only some platforms, is accepted.
    None,
    /// Those whose platform is in the list; entries of other platforms, or without a
    /// platform, may be absent.
    Platforms(Vec<Platform>),
}

/// A manifest an index lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexChild {
    pub digest: Digest,
    /// Whether the index is refused when the repository does not hold this manifest.
    pub must_exist: bool,
}

/// The `artifactType` a manifest is listed under by the referrers API, and the value its
/// `artifactType` filter compares: the declared one; for an image manifest without one
/// (missing or empty), its config's media type; for an index without one, none
/// (distribution-spec, "Listing Referrers"). Migration 0006 applies the same rule in SQL to
/// manifests stored before it.
pub fn effective_artifact_type(
    kind: ManifestKind,
    declared: Option<&str>,
    config_media_type: Option<&str>,
) -> Option<String> {
    let declared = declared.filter(|a| !a.is_empty());
    match kind {
        ManifestKind::Image => declared.or(config_media_type.filter(|m| !m.is_empty())),
        ManifestKind::Index => declared,
    }
    .map(str::to_string)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: Option<String>,
    digest: Option<String>,
    size: Option<i64>,
    #[serde(default)]
    urls: Vec<String>,
    artifact_type: Option<String>,
    annotations: Option<Value>,
    /// Read leniently: the registry only compares platforms, it does not validate them.
    platform: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
    subject: Option<RawDescriptor>,
    annotations: Option<Value>,
    // Schema 1 tells itself apart by these.
    fs_layers: Option<Value>,
}

/// Whether a manifest describes one image/artifact or lists other manifests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestKind {
    Image,
    Index,
}

/// A manifest that parsed and passed structural validation.
#[derive(Clone, Debug)]
pub struct ParsedManifest {
    /// The effective media type (body field, else the request's Content-Type).
    pub media_type: String,
    pub kind: ManifestKind,
    /// The effective artifact type: see [`effective_artifact_type`].
    pub artifact_type: Option<String>,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub annotations: Option<Value>,
}

/// An `artifactType`: empty means none; anything else must be a media type, as the image spec
/// requires (and the value is stored, so it must be text every database takes, which a
/// media type is).
fn artifact_type(raw: Option<String>, what: &str) -> Result<Option<String>, ManifestError> {
    match raw.filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => match t.parse::<MediaType>() {
            Ok(_) => Ok(Some(t)),
            Err(e) => Err(ManifestError::Invalid(format!("{what} artifactType: {e}"))),
        },
    }
}

/// A JSON syntax or type error, as a refusal says it: serde quotes offending strings whole,
/// so a long message is cut short.
fn json_error(e: serde_json::Error) -> ManifestError {
    const MAX_CHARS: usize = 200;
    let message = e.to_string();
    match message.char_indices().nth(MAX_CHARS) {
        Some((end, _)) => {
            ManifestError::Json(format!("{}… (at {}:{})", &message[..end], e.line(), e.column()))
        }
        None => ManifestError::Json(message),
    }
}

fn descriptor(raw: RawDescriptor, what: &str) -> Result<Descriptor, ManifestError> {
    let media_type = raw
        .media_type
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ManifestError::Invalid(format!("{what} has no mediaType")))?;
    let digest_text =
        raw.digest.ok_or_else(|| ManifestError::Invalid(format!("{what} has no digest")))?;
    let digest = digest_text
        .parse()
        .map_err(|e| ManifestError::Invalid(format!("{what} has an invalid digest: {e}")))?;
    let size = raw.size.ok_or_else(|| ManifestError::Invalid(format!("{what} has no size")))?;
    if size < 0 {
        return Err(ManifestError::Invalid(format!("{what} has a negative size")));
    }
    let platform = raw.platform.as_ref().and_then(|p| {
        let text = |key: &str| p.get(key).and_then(Value::as_str).map(str::to_string);
        Some(Platform { architecture: text("architecture")?, os: text("os")? })
    });
    Ok(Descriptor {
        media_type,
        digest,
        size,
        urls: raw.urls,
        artifact_type: raw.artifact_type.filter(|a| !a.is_empty()),
        annotations: raw.annotations,
        platform,
    })
}

fn is_image_type(m: &str) -> bool {
    m == mt::OCI_MANIFEST || m == mt::DOCKER_MANIFEST
}

fn is_index_type(m: &str) -> bool {
    m == mt::OCI_INDEX || m == mt::DOCKER_MANIFEST_LIST
}

impl Descriptor {
    /// Foreign (Docker) and non-distributable (OCI) layers with URLs are fetched by clients
    /// from elsewhere, so the registry need not hold them.
    pub fn is_foreign(&self) -> bool {
        !self.urls.is_empty()
            && (self.media_type.contains("foreign") || self.media_type.contains("nondistributable"))
    }
}

impl ParsedManifest {
    /// Parses `body`, sent with `content_type` (the request header, if any).
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<ParsedManifest, ManifestError> {
        let content_type = content_type
            .map(|c| c.split(';').next().unwrap_or("").trim())
            .filter(|c| !c.is_empty());
        if matches!(content_type, Some(mt::DOCKER_SCHEMA1 | mt::DOCKER_SCHEMA1_SIGNED)) {
            return Err(ManifestError::Schema1);
        }
        let raw: RawManifest = serde_json::from_slice(body).map_err(json_error)?;
        if raw.schema_version == Some(1) || raw.fs_layers.is_some() {
            return Err(ManifestError::Schema1);
        }
        if raw.schema_version != Some(2) {
            return Err(ManifestError::Invalid("schemaVersion must be 2".into()));
        }
        // The body's mediaType wins; when both are present they must agree.
        let media_type = match (&raw.media_type, content_type) {
            (Some(body_type), Some(header))
                if body_type != header && (is_image_type(header) || is_index_type(header)) =>
            {
                return Err(ManifestError::Invalid(format!(
                    "mediaType {} in the body does not match Content-Type {header:?}",
                    crate::preview(body_type)
                )));
            }
            (Some(body_type), _) => body_type.clone(),
            (None, Some(header)) if is_image_type(header) || is_index_type(header) => {
                header.to_string()
            }
            (None, _) if raw.manifests.is_some() => mt::OCI_INDEX.to_string(),
            (None, _) => mt::OCI_MANIFEST.to_string(),
        };
        if matches!(media_type.as_str(), mt::DOCKER_SCHEMA1 | mt::DOCKER_SCHEMA1_SIGNED) {
            return Err(ManifestError::Schema1);
        }
        let subject = raw.subject.map(|s| descriptor(s, "subject")).transpose()?;
        if is_image_type(&media_type) {
            let config = raw
                .config
                .ok_or_else(|| ManifestError::Invalid("an image manifest needs a config".into()))?;
            let config = descriptor(config, "config")?;
            // The config's media type doubles as the artifact type, so it obeys the same grammar.
            if let Err(e) = config.media_type.parse::<MediaType>() {
                return Err(ManifestError::Invalid(format!("the config's mediaType: {e}")));
            }
            let layers = raw
                .layers
                .unwrap_or_default()
                .into_iter()
                .enumerate()
                .map(|(i, l)| descriptor(l, &format!("layer {i}")))
                .collect::<Result<Vec<_>, _>>()?;
            if raw.manifests.is_some() {
                return Err(ManifestError::Invalid(
                    "an image manifest cannot list manifests".into(),
                ));
            }
            // Sizes are added up (usage, quotas), so together they must fit the sum's type;
            // no content is that large anyway.
            if layers.iter().try_fold(config.size, |sum, l| sum.checked_add(l.size)).is_none() {
                return Err(ManifestError::Invalid(
                    "the sizes of the config and layers add up to more than 2^63-1 bytes".into(),
                ));
            }
            let declared = artifact_type(raw.artifact_type, "the manifest's")?;
            let artifact_type = effective_artifact_type(
                ManifestKind::Image,
                declared.as_deref(),
                Some(&config.media_type),
            );
            Ok(ParsedManifest {
                media_type,
                kind: ManifestKind::Image,
                artifact_type,
                config: Some(config),
                layers,
                manifests: Vec::new(),
                subject,
                annotations: raw.annotations,
            })
        } else if is_index_type(&media_type) {
            let manifests = raw
                .manifests
                .ok_or_else(|| ManifestError::Invalid("an index needs a manifests list".into()))?
                .into_iter()
                .enumerate()
                .map(|(i, m)| descriptor(m, &format!("manifest {i}")))
                .collect::<Result<Vec<_>, _>>()?;
            if raw.layers.is_some() {
                return Err(ManifestError::Invalid("an index cannot have layers".into()));
            }
            Ok(ParsedManifest {
                media_type,
                kind: ManifestKind::Index,
                artifact_type: effective_artifact_type(
                    ManifestKind::Index,
                    artifact_type(raw.artifact_type, "the index's")?.as_deref(),
                    None,
                ),
                config: None,
                layers: Vec::new(),
                manifests,
                subject,
                annotations: raw.annotations,
            })
        } else {
            Err(ManifestError::UnsupportedMediaType(crate::preview(&media_type)))
        }
    }

    /// Blobs that must be in the repository: the config and every distributable layer.
    pub fn required_blobs(&self) -> Vec<Digest> {
        let mut out: Vec<Digest> = Vec::new();
        for d in self.config.iter().chain(self.layers.iter().filter(|l| !l.is_foreign())) {
            if !out.contains(&d.digest) {
                out.push(d.digest.clone());
            }
        }
        out
    }

    /// Manifests an index lists, once each, with whether `validation` requires the repository
    /// to hold them. A manifest listed for several platforms must exist if any of them says so.
    pub fn children(&self, validation: &IndexValidation) -> Vec<IndexChild> {
        let mut out: Vec<IndexChild> = Vec::new();
        for d in &self.manifests {
            let must_exist = match validation {
                IndexValidation::All => true,
                IndexValidation::None => false,
                IndexValidation::Platforms(list) => {
                    d.platform.as_ref().is_some_and(|p| list.contains(p))
                }
            };
            match out.iter_mut().find(|c| c.digest == d.digest) {
                Some(child) => child.must_exist |= must_exist,
                None => out.push(IndexChild { digest: d.digest.clone(), must_exist }),
            }
        }
        out
    }

    /// Bytes this manifest and what it references take: payload, config, layers (children of
    /// an index are counted by their own manifests).
    pub fn referenced_size(&self) -> i64 {
        // `parse` refuses sizes that overflow; saturating keeps hand-built values safe too.
        self.config.iter().chain(self.layers.iter()).fold(0i64, |sum, d| sum.saturating_add(d.size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        Digest::sha256_of(&[n]).to_string()
    }

    #[test]
    fn parses_oci_image_with_subject_and_artifact() {
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": mt::OCI_MANIFEST,
            "artifactType": "application/vnd.example.sbom",
            "config": {"mediaType": mt::OCI_EMPTY, "digest": d(1), "size": 2},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d(2), "size": 5},
                {"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar",
                 "digest": d(3), "size": 5, "urls": ["https://example.com/x"]}
            ],
            "subject": {"mediaType": mt::OCI_MANIFEST, "digest": d(4), "size": 10}
        });
        let m = ParsedManifest::parse(None, body.to_string().as_bytes()).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(m.artifact_type.as_deref(), Some("application/vnd.example.sbom"));
        assert_eq!(m.required_blobs().len(), 2, "foreign layer is not required");
        assert_eq!(m.subject.unwrap().digest.to_string(), d(4));
    }

    #[test]
    fn artifact_types_are_media_types() {
        let image = |artifact_type: &str, config_type: &str| {
            serde_json::json!({
                "schemaVersion": 2, "mediaType": mt::OCI_MANIFEST, "artifactType": artifact_type,
                "config": {"mediaType": config_type, "digest": d(1), "size": 2}, "layers": []
            })
            .to_string()
        };
        for bad in ["a\0b/c", "application/x\n", "not-a-media-type", "a/b; x=y"] {
            let body = image(bad, mt::OCI_EMPTY);
            let e = ParsedManifest::parse(None, body.as_bytes()).unwrap_err();
            assert!(e.to_string().contains("artifactType"), "{bad:?}: {e}");
            let body = image("", bad);
            let e = ParsedManifest::parse(None, body.as_bytes()).unwrap_err();
            assert!(e.to_string().contains("config's mediaType"), "{bad:?}: {e}");
        }
        // Empty means none: the config's media type stands in, as the spec says.
        let m =
            ParsedManifest::parse(None, image("", "application/vnd.x.config").as_bytes()).unwrap();
        assert_eq!(m.artifact_type.as_deref(), Some("application/vnd.x.config"));
        let index = serde_json::json!({
            "schemaVersion": 2, "mediaType": mt::OCI_INDEX, "artifactType": "x\0y", "manifests": []
        });
        assert!(ParsedManifest::parse(None, index.to_string().as_bytes()).is_err());
    }

    #[test]
    fn parses_docker_list_from_header() {
        let body = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": mt::DOCKER_MANIFEST, "digest": d(1), "size": 3}]
        });
        let m = ParsedManifest::parse(Some(mt::DOCKER_MANIFEST_LIST), body.to_string().as_bytes())
            .unwrap();
        assert_eq!(m.media_type, mt::DOCKER_MANIFEST_LIST);
        assert_eq!(m.children(&IndexValidation::All).len(), 1);
    }

    fn image_with(artifact_type: Option<&str>, config_type: &str) -> ParsedManifest {
        let mut body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": mt::OCI_MANIFEST,
            "config": {"mediaType": config_type, "digest": d(1), "size": 2},
            "layers": []
        });
        if let Some(a) = artifact_type {
            body["artifactType"] = a.into();
        }
        ParsedManifest::parse(None, body.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn artifact_type_falls_back_to_the_config_media_type_for_images_only() {
        let oci_config = "application/vnd.oci.image.config.v1+json";
        let docker_config = "application/vnd.docker.container.image.v1+json";
        assert_eq!(image_with(None, oci_config).artifact_type.as_deref(), Some(oci_config));
        assert_eq!(image_with(None, docker_config).artifact_type.as_deref(), Some(docker_config));
        assert_eq!(image_with(Some(""), oci_config).artifact_type.as_deref(), Some(oci_config));
        assert_eq!(
            image_with(Some("application/x.sbom"), oci_config).artifact_type.as_deref(),
            Some("application/x.sbom")
        );
        for declared in [None, Some(""), Some("application/x.sig")] {
            let mut body = serde_json::json!({
                "schemaVersion": 2, "mediaType": mt::OCI_INDEX, "manifests": []
            });
            if let Some(a) = declared {
                body["artifactType"] = a.into();
            }
            let index = ParsedManifest::parse(None, body.to_string().as_bytes()).unwrap();
            assert_eq!(index.artifact_type.as_deref(), declared.filter(|a| !a.is_empty()));
        }
    }

    #[test]
    fn index_children_required_by_each_validation_mode() {
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": mt::OCI_INDEX,
            "manifests": [
                {"mediaType": mt::OCI_MANIFEST, "digest": d(1), "size": 3,
                 "platform": {"architecture": "amd64", "os": "linux"}},
                {"mediaType": mt::OCI_MANIFEST, "digest": d(2), "size": 3,
                 "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
                {"mediaType": mt::OCI_MANIFEST, "digest": d(3), "size": 3},
                {"mediaType": mt::OCI_MANIFEST, "digest": d(4), "size": 3,
                 "platform": {"architecture": 7, "os": "linux"}},
                // The same manifest listed again, for a platform on the list.
                {"mediaType": mt::OCI_MANIFEST, "digest": d(3), "size": 3,
                 "platform": {"architecture": "arm64", "os": "linux"}}
            ]
        });
        let m = ParsedManifest::parse(None, body.to_string().as_bytes()).unwrap();
        let required = |v: &IndexValidation| -> Vec<(String, bool)> {
            m.children(v).into_iter().map(|c| (c.digest.to_string(), c.must_exist)).collect()
        };
        let all = required(&IndexValidation::All);
        assert_eq!(all.len(), 4, "each manifest once: {all:?}");
        assert!(all.iter().all(|(_, must)| *must));
        assert!(required(&IndexValidation::None).iter().all(|(_, must)| !*must));
        let arm = IndexValidation::Platforms(vec![Platform {
            architecture: "arm64".into(),
            os: "linux".into(),
        }]);
        assert_eq!(
            required(&arm),
            vec![(d(1), false), (d(2), true), (d(3), true), (d(4), false)],
            "variants are not compared; malformed platforms match nothing"
        );
    }

    #[test]
    fn sizes_that_overflow_together_are_refused() {
        // Found by the property tests: two sizes of i64::MAX made `referenced_size` overflow
        // (a panic in debug builds, a negative total in release ones).
        let body = serde_json::json!({
            "schemaVersion": 2, "mediaType": mt::OCI_MANIFEST,
            "config": {"mediaType": mt::OCI_EMPTY, "digest": d(1), "size": i64::MAX},
            "layers": [{"mediaType": "application/x", "digest": d(2), "size": 1}]
        });
        let e = ParsedManifest::parse(None, body.to_string().as_bytes()).unwrap_err();
        assert!(e.to_string().contains("add up to more than"), "{e}");
        // A JSON error quoting a huge string stays short.
        let body = format!(r#"{{"schemaVersion": "{}"}}"#, "9".repeat(100_000));
        let e = ParsedManifest::parse(None, body.as_bytes()).unwrap_err();
        assert!(e.to_string().len() < 400, "{} bytes", e.to_string().len());
        let body = serde_json::json!({"schemaVersion": 2, "mediaType": "x".repeat(100_000)});
        let e = ParsedManifest::parse(None, body.to_string().as_bytes()).unwrap_err();
        assert!(e.to_string().len() < 400, "{} bytes", e.to_string().len());
    }

    #[test]
    fn refuses_schema1_bad_json_and_mismatches() {
        let s1 = br#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        assert_eq!(ParsedManifest::parse(None, s1).unwrap_err(), ManifestError::Schema1);
        assert_eq!(
            ParsedManifest::parse(Some(mt::DOCKER_SCHEMA1_SIGNED), b"{}").unwrap_err(),
            ManifestError::Schema1
        );
        assert!(matches!(
            ParsedManifest::parse(None, b"{nope").unwrap_err(),
            ManifestError::Json(_)
        ));
        let body = serde_json::json!({
            "schemaVersion": 2, "mediaType": mt::OCI_MANIFEST,
            "config": {"mediaType": "x", "digest": "sha256:bad", "size": 1}, "layers": []
        });
        assert!(matches!(
            ParsedManifest::parse(None, body.to_string().as_bytes()).unwrap_err(),
            ManifestError::Invalid(_)
        ));
        let body = serde_json::json!({
            "schemaVersion": 2, "mediaType": mt::OCI_INDEX, "manifests": []
        });
        assert!(matches!(
            ParsedManifest::parse(Some(mt::OCI_MANIFEST), body.to_string().as_bytes()).unwrap_err(),
            ManifestError::Invalid(_)
        ));
    }
}
