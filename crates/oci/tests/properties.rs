//! Properties of every parser of untrusted input in `oci`, over generated input: valid values,
//! valid values with one mutation, and arbitrary strings and bytes.
//!
//! - Names, tags, references, digests and media types agree with the spec's grammar, written
//!   here once more as a regular expression (an independent oracle), and an accepted value is
//!   the input, byte for byte.
//! - Refusals stay short however long the input (no 100 KB echo).
//! - `ParsedManifest::parse` never panics on any content type and bytes, and what it accepts
//!   keeps its invariants: a known media type, a valid artifact type, sizes that add up.
//! - Byte ranges: an accepted range lies inside the blob, is never empty, and round-trips.
//!
//! Every property runs a bounded number of cases, so the suite stays fast; the fuzz targets
//! in `fuzz/` run the same parsers for as long as a developer wants.

use oci::{
    media_type as mt, ByteRange, ChunkRange, Digest, IndexValidation, ManifestKind, MediaType,
    ParsedManifest, Reference, RepositoryName, Tag,
};
use proptest::prelude::*;
use regex::Regex;
use serde_json::{json, Value};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

fn oracle(pattern: &str) -> Regex {
    Regex::new(&format!("^(?:{pattern})$")).unwrap()
}

const NAME_GRAMMAR: &str =
    r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*";
const TAG_GRAMMAR: &str = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}";
const MEDIA_TYPE_GRAMMAR: &str =
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}";

/// Text that is mostly close to the grammar, sometimes anything at all.
fn near(alphabet: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::string::string_regex(alphabet).unwrap(),
        1 => any::<String>(),
        1 => "[\\x00-\\x7f]{0,40}",
    ]
}

/// One character of `s` replaced, inserted or removed at `at` (0..1 of its length).
fn mutate(s: &str, kind: u8, at: f64, c: char) -> String {
    let chars: Vec<char> = s.chars().collect();
    let i = ((chars.len() as f64) * at) as usize;
    let mut out = chars.clone();
    match kind % 3 {
        0 if i < out.len() => out[i] = c,
        1 if i < out.len() => {
            out.remove(i);
        }
        _ => out.insert(i.min(out.len()), c),
    }
    out.into_iter().collect()
}

fn short_refusal(message: String, input: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        message.len() < 600,
        "a refusal of {} bytes of input is {} bytes long: {message}",
        input.len(),
        message.len()
    );
    Ok(())
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn repository_names_follow_the_grammar(
        s in prop_oneof![
            near("[a-z0-9._/-]{0,30}"),
            proptest::string::string_regex(NAME_GRAMMAR).unwrap(),
            (proptest::string::string_regex(NAME_GRAMMAR).unwrap(), any::<u8>(), 0.0..1.0f64,
             prop_oneof![Just('/'), Just('.'), Just('_'), Just('-'), Just('A'), Just('\0'),
                         Just('а'), Just(':'), Just('%'), any::<char>()])
                .prop_map(|(s, kind, at, c)| mutate(&s, kind, at, c)),
        ]
    ) {
        let expected = oracle(NAME_GRAMMAR).is_match(&s) && s.len() <= 255;
        match s.parse::<RepositoryName>() {
            Ok(name) => {
                prop_assert!(expected, "{s:?} was accepted against the grammar");
                prop_assert_eq!(name.as_str(), s.as_str());
                prop_assert_eq!(name.to_string().parse::<RepositoryName>().unwrap(), name);
            }
            Err(e) => {
                prop_assert!(!expected, "{s:?} was refused: {e}");
                short_refusal(e.to_string(), &s)?;
            }
        }
    }

    #[test]
    fn tags_follow_the_grammar(
        s in prop_oneof![
            near("[A-Za-z0-9._:/-]{0,20}"),
            proptest::string::string_regex(TAG_GRAMMAR).unwrap(),
            "[a-z]{120,135}",
        ]
    ) {
        let expected = oracle(TAG_GRAMMAR).is_match(&s);
        match s.parse::<Tag>() {
            Ok(tag) => {
                prop_assert!(expected, "{s:?} was accepted against the grammar");
                prop_assert_eq!(tag.as_str(), s.as_str());
            }
            Err(e) => {
                prop_assert!(!expected, "{s:?} was refused: {e}");
                short_refusal(e.to_string(), &s)?;
            }
        }
    }

    #[test]
    fn digests_are_algorithm_and_lowercase_hex(
        s in prop_oneof![
            near("(sha256|sha512|md5|SHA256|)?:?[0-9a-fA-F]{0,130}"),
            "sha256:[0-9a-f]{64}",
            "sha512:[0-9a-f]{128}",
            ("sha256:[0-9a-f]{64}", any::<u8>(), 0.0..1.0f64, any::<char>())
                .prop_map(|(s, kind, at, c)| mutate(&s, kind, at, c)),
        ]
    ) {
        let expected = oracle("sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}").is_match(&s);
        match s.parse::<Digest>() {
            Ok(d) => {
                prop_assert!(expected, "{s:?} was accepted");
                prop_assert_eq!(d.as_str(), s.as_str());
                prop_assert_eq!(format!("{}:{}", d.algorithm().as_str(), d.hex()), s.clone());
                prop_assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
            }
            Err(e) => {
                prop_assert!(!expected, "{s:?} was refused: {e}");
                short_refusal(e.to_string(), &s)?;
            }
        }
    }

    #[test]
    fn a_reference_is_a_tag_or_a_digest_spelled_as_given(
        s in prop_oneof![
            near("[A-Za-z0-9._:-]{0,20}"),
            "sha256:[0-9a-f]{64}",
            proptest::string::string_regex(TAG_GRAMMAR).unwrap(),
        ]
    ) {
        match Reference::parse(&s) {
            Ok(r) => {
                prop_assert_eq!(r.to_string(), s.clone());
                match r {
                    Reference::Digest(_) => prop_assert!(s.contains(':')),
                    Reference::Tag(_) => prop_assert!(oracle(TAG_GRAMMAR).is_match(&s)),
                }
            }
            Err(e) => short_refusal(e.to_string(), &s)?,
        }
    }

    #[test]
    fn media_types_follow_rfc_6838(
        s in prop_oneof![
            near("[A-Za-z0-9!#$&^_.+/ ;=-]{0,40}"),
            proptest::string::string_regex(MEDIA_TYPE_GRAMMAR).unwrap(),
            "[a-z]{125,130}/[a-z]{1,3}",
        ]
    ) {
        let expected = oracle(MEDIA_TYPE_GRAMMAR).is_match(&s);
        match s.parse::<MediaType>() {
            Ok(m) => {
                prop_assert!(expected, "{s:?} was accepted");
                prop_assert_eq!(m.as_str(), s.as_str());
            }
            Err(e) => {
                prop_assert!(!expected, "{s:?} was refused: {e}");
                short_refusal(e.to_string(), &s)?;
            }
        }
    }

    #[test]
    fn previews_are_bounded(s in any::<String>(), repeat in 1..2000usize) {
        let long = s.repeat(repeat);
        let shown = oci::preview(&long);
        // 64 characters, each escaped to at most `\u{10ffff}`, plus the length note.
        prop_assert!(shown.len() <= 64 * 10 + 40, "{} bytes", shown.len());
        prop_assert!(shown.starts_with('"'));
    }
}

/// Strings as a hostile manifest might hold them.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(mt::OCI_MANIFEST.to_string()),
        Just(mt::OCI_INDEX.to_string()),
        Just(mt::DOCKER_MANIFEST.to_string()),
        Just(mt::DOCKER_MANIFEST_LIST.to_string()),
        Just(mt::DOCKER_SCHEMA1.to_string()),
        Just(mt::OCI_EMPTY.to_string()),
        Just("application/vnd.example+json".to_string()),
        Just("a\0b/c".to_string()),
        Just("application/x\n".to_string()),
        "[a-z]{1,8}/[a-z.+-]{1,12}",
        any::<String>(),
    ]
}

fn digest_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<[u8; 4]>().prop_map(|b| Digest::sha256_of(&b).to_string()),
        1 => "sha256:[0-9a-f]{60,66}",
        1 => any::<String>(),
    ]
}

fn size() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (0..10_000i64).prop_map(Value::from),
        1 => Just(json!(i64::MAX)),
        1 => Just(json!(i64::MAX - 1)),
        1 => Just(json!(u64::MAX)),
        1 => Just(json!(-1)),
        1 => Just(json!(i64::MIN)),
        1 => Just(json!(1.5)),
        1 => Just(json!("12")),
        1 => Just(json!("9".repeat(5_000))),
        1 => Just(Value::Null),
    ]
}

/// A JSON value that may be anything, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn descriptor() -> impl Strategy<Value = Value> {
    (
        prop::option::weighted(0.9, text()),
        prop::option::weighted(0.9, digest_text()),
        prop::option::weighted(0.9, size()),
        prop::option::weighted(0.2, prop::collection::vec(text(), 0..3)),
        prop::option::weighted(0.3, text()),
        prop::option::weighted(0.2, any_json()),
        prop::option::weighted(
            0.3,
            prop_oneof![
                ("[a-z0-9]{1,6}", "[a-z]{1,6}")
                    .prop_map(|(a, o)| json!({"architecture": a, "os": o})),
                any_json(),
            ],
        ),
    )
        .prop_map(|(media_type, digest, size, urls, artifact_type, annotations, platform)| {
            let mut d = json!({});
            let mut set = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    d[k] = v;
                }
            };
            set("mediaType", media_type.map(Value::from));
            set("digest", digest.map(Value::from));
            set("size", size);
            set("urls", urls.map(Value::from));
            set("artifactType", artifact_type.map(Value::from));
            set("annotations", annotations);
            set("platform", platform);
            d
        })
}

/// A manifest-shaped JSON document: every field present or not, valid or not.
fn manifest_json() -> impl Strategy<Value = Value> {
    (
        prop::option::weighted(
            0.95,
            prop_oneof![8 => Just(json!(2)), 1 => Just(json!(1)), 1 => any_json()],
        ),
        prop::option::weighted(0.7, text()),
        prop::option::weighted(0.4, text()),
        prop::option::weighted(0.7, descriptor()),
        prop::option::weighted(0.6, prop::collection::vec(descriptor(), 0..5)),
        prop::option::weighted(0.4, prop::collection::vec(descriptor(), 0..5)),
        prop::option::weighted(0.3, descriptor()),
        prop::option::weighted(0.2, any_json()),
        prop::option::weighted(0.05, any_json()),
    )
        .prop_map(
            |(
                schema,
                media_type,
                artifact_type,
                config,
                layers,
                manifests,
                subject,
                annotations,
                fs,
            )| {
                let mut m = json!({});
                let mut set = |k: &str, v: Option<Value>| {
                    if let Some(v) = v {
                        m[k] = v;
                    }
                };
                set("schemaVersion", schema);
                set("mediaType", media_type.map(Value::from));
                set("artifactType", artifact_type.map(Value::from));
                set("config", config);
                set("layers", layers.map(Value::from));
                set("manifests", manifests.map(Value::from));
                set("subject", subject);
                set("annotations", annotations);
                set("fsLayers", fs);
                m
            },
        )
}

/// A valid image manifest or index with a few edits: a field removed, or set to anything a
/// field of its kind might hold (sizes near the limits, bad digests, odd media types).
fn edited_manifest() -> impl Strategy<Value = Value> {
    let valid = prop_oneof![
        Just(json!({
            "schemaVersion": 2,
            "mediaType": mt::OCI_MANIFEST,
            "config": {"mediaType": mt::OCI_EMPTY, "digest": Digest::sha256_of(b"{}").to_string(), "size": 2},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": Digest::sha256_of(b"1").to_string(), "size": 1},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": Digest::sha256_of(b"2").to_string(), "size": 1}
            ],
        })),
        Just(json!({
            "schemaVersion": 2,
            "mediaType": mt::OCI_INDEX,
            "manifests": [
                {"mediaType": mt::OCI_MANIFEST, "digest": Digest::sha256_of(b"3").to_string(), "size": 3,
                 "platform": {"architecture": "amd64", "os": "linux"}}
            ],
        })),
    ];
    let edit = (
        prop_oneof![
            Just("/schemaVersion"),
            Just("/mediaType"),
            Just("/artifactType"),
            Just("/config"),
            Just("/config/size"),
            Just("/config/mediaType"),
            Just("/config/digest"),
            Just("/layers"),
            Just("/layers/0/size"),
            Just("/layers/1/size"),
            Just("/layers/0/urls"),
            Just("/layers/1/mediaType"),
            Just("/manifests"),
            Just("/manifests/0/size"),
            Just("/manifests/0/platform"),
            Just("/subject"),
            Just("/annotations"),
        ],
        prop_oneof![
            3 => size(),
            2 => text().prop_map(Value::from),
            1 => descriptor(),
            1 => prop::collection::vec(descriptor(), 0..3).prop_map(Value::from),
            1 => any_json(),
            1 => Just(Value::Null),
        ],
        any::<bool>(),
    );
    (valid, prop::collection::vec(edit, 0..4)).prop_map(|(mut m, edits)| {
        for (pointer, value, remove) in edits {
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            let target = if parent.is_empty() { Some(&mut m) } else { m.pointer_mut(parent) };
            match (target, key.parse::<usize>()) {
                (Some(Value::Array(items)), Ok(i)) if i < items.len() => {
                    if remove {
                        items.remove(i);
                    } else {
                        items[i] = value;
                    }
                }
                (Some(Value::Object(fields)), _) => {
                    if remove {
                        fields.remove(key);
                    } else {
                        fields.insert(key.to_string(), value);
                    }
                }
                _ => {}
            }
        }
        m
    })
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop::option::weighted(
        0.8,
        prop_oneof![
            text(),
            text().prop_map(|t| format!("{t}; charset=utf-8")),
            Just(" ; ".to_string()),
        ],
    )
}

/// What every accepted manifest must satisfy.
fn check_accepted(m: &ParsedManifest) -> Result<(), TestCaseError> {
    let known = [mt::OCI_MANIFEST, mt::OCI_INDEX, mt::DOCKER_MANIFEST, mt::DOCKER_MANIFEST_LIST];
    prop_assert!(known.contains(&m.media_type.as_str()), "media type {:?}", m.media_type);
    if let Some(at) = &m.artifact_type {
        prop_assert!(at.parse::<MediaType>().is_ok(), "artifact type {at:?}");
    }
    match m.kind {
        ManifestKind::Image => {
            let config = m.config.as_ref().expect("an image has a config");
            prop_assert!(config.media_type.parse::<MediaType>().is_ok());
            prop_assert!(m.manifests.is_empty());
            prop_assert!(m.artifact_type.is_some(), "an image always has an artifact type");
        }
        ManifestKind::Index => {
            prop_assert!(m.config.is_none() && m.layers.is_empty());
        }
    }
    for d in m.config.iter().chain(&m.layers).chain(&m.manifests).chain(&m.subject) {
        prop_assert!(d.size >= 0);
        prop_assert!(!d.media_type.is_empty());
    }
    let total = m.referenced_size();
    prop_assert!(total >= 0, "sizes add up to {total}");
    let blobs = m.required_blobs();
    let mut unique = blobs.clone();
    unique.dedup();
    prop_assert_eq!(blobs.len(), unique.len());
    for validation in [IndexValidation::All, IndexValidation::None] {
        let children = m.children(&validation);
        prop_assert!(children.len() <= m.manifests.len());
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn any_bytes_parse_or_are_refused(ct in content_type(), body in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(m) = ParsedManifest::parse(ct.as_deref(), &body) {
            check_accepted(&m)?;
        }
    }

    #[test]
    fn manifest_shaped_json_parses_or_is_refused(
        ct in content_type(),
        m in prop_oneof![manifest_json(), edited_manifest()],
    ) {
        let body = m.to_string();
        match ParsedManifest::parse(ct.as_deref(), body.as_bytes()) {
            Ok(parsed) => {
                check_accepted(&parsed)?;
                // The declared artifact type wins; for an image without one, the config's.
                let declared = m["artifactType"].as_str().filter(|a| !a.is_empty());
                match parsed.kind {
                    ManifestKind::Image => prop_assert_eq!(
                        parsed.artifact_type.as_deref(),
                        declared.or(m["config"]["mediaType"].as_str())
                    ),
                    ManifestKind::Index => {
                        prop_assert_eq!(parsed.artifact_type.as_deref(), declared)
                    }
                }
            }
            Err(e) => short_refusal(e.to_string(), &body)?,
        }
    }
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn accepted_byte_ranges_lie_inside_the_blob(
        value in prop_oneof![
            "bytes=[0-9]{0,4}-[0-9]{0,4}",
            " ?bytes= ?[0-9+ -]{0,8}(,[0-9]{1,3}-[0-9]{0,3})?",
            "bytes=[0-9]{15,30}-[0-9]{0,30}",
            "bytes=-[0-9]{15,30}",
            any::<String>(),
        ],
        size in prop_oneof![0..2000u64, Just(0), Just(u64::MAX), Just(i64::MAX as u64)],
    ) {
        match ByteRange::parse(&value, size) {
            Ok(r) => {
                prop_assert!(r.start() < r.end() && r.end() <= size, "{value:?} of {size}: {r:?}");
                prop_assert_eq!(r.len(), r.end() - r.start());
                // The answer's Content-Range names the same bytes, and asking for exactly
                // those gives the same range back.
                let again = format!("bytes={}-{}", r.start(), r.end() - 1);
                prop_assert_eq!(ByteRange::parse(&again, size).unwrap(), r);
                prop_assert_eq!(r.content_range(size), format!("bytes {}-{}/{size}", r.start(), r.end() - 1));
            }
            Err(e) => short_refusal(e.to_string(), &value)?,
        }
    }

    #[test]
    fn every_range_inside_a_blob_is_served_exactly(size in 1..u64::MAX, a in any::<u64>(), b in any::<u64>()) {
        let (first, last) = (a.min(b) % size, a.max(b) % size);
        let (first, last) = (first.min(last), first.max(last));
        let r = ByteRange::parse(&format!("bytes={first}-{last}"), size).unwrap();
        prop_assert_eq!(r.as_range(), first..last + 1);
        let open = ByteRange::parse(&format!("bytes={first}-"), size).unwrap();
        prop_assert_eq!(open.as_range(), first..size);
        let suffix = ByteRange::parse(&format!("bytes=-{}", last + 1), size).unwrap();
        prop_assert_eq!(suffix.as_range(), size - (last + 1)..size);
        // Past the end: refused for a first position, clamped for a last one.
        let past_end = ByteRange::parse(&format!("bytes={size}-"), size);
        prop_assert!(past_end.is_err(), "{:?}", past_end);
        prop_assert_eq!(
            ByteRange::parse(&format!("bytes={first}-{}", u64::MAX), size).unwrap().end(),
            size
        );
    }

    #[test]
    fn chunk_ranges_round_trip_and_never_overflow(
        value in prop_oneof![
            "(bytes[ =])?[0-9]{1,20}-[0-9]{1,20}(/[0-9*]{1,5})?",
            "[0-9 +*/=-]{0,12}",
            any::<String>(),
        ],
        a in any::<u64>(), b in any::<u64>(),
    ) {
        match ChunkRange::parse(&value) {
            Ok(r) => {
                prop_assert!(r.start() <= r.last() && r.last() <= oci::range::MAX_POSITION);
                prop_assert_eq!(r.len(), r.last() - r.start() + 1);
                prop_assert_eq!(ChunkRange::parse(&r.to_string()).unwrap(), r);
            }
            Err(e) => short_refusal(e.to_string(), &value)?,
        }
        let (start, end) = (a.min(b), a.max(b));
        let parsed = ChunkRange::parse(&format!("{start}-{end}"));
        prop_assert_eq!(parsed.is_ok(), end <= i64::MAX as u64, "{}-{}", start, end);
    }
}
