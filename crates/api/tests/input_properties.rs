//! Properties of the `/api/v4` parsers of untrusted input, over generated input: group and
//! project references, path segments, pages, the number/boolean/list forms parameters arrive
//! in, whole requests' parameters (query, form and JSON bodies), expiry dates, durations, and
//! the tag-name regexes of bulk deletes and cleanup policies.
//!
//! None may panic; each either gives a value that keeps its invariants or refuses with a 400
//! whose message is short; and each accepted value has one spelling.

use api::input::{Page, Params, Ref};
use api::names::{why_not_full_path, PathSegment, MAX_FULL_PATH};
use api::registry_api::{parse_duration_ms, TagCleanup};
use axum::extract::FromRequest;
use axum::http::StatusCode;
use oci::RepositoryName;
use proptest::prelude::*;
use serde::Deserialize;
use serde_json::{json, Value};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

fn refused_briefly(e: api::ApiError, input: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{}", e);
    let message = e.to_string();
    prop_assert!(
        message.len() < 600,
        "refusing {} bytes of input took {} bytes: {message}",
        input.len(),
        message.len()
    );
    Ok(())
}

/// Paths as clients might send them: valid, almost valid, or anything.
fn path_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,3}",
        "[a-z0-9._/-]{0,24}",
        "[A-Za-z0-9%._/ -]{0,24}",
        "[0-9]{1,25}",
        "[+-][0-9]{1,5}",
        "[a-z]{150,210}",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn a_reference_is_an_id_or_a_full_path_that_could_exist(text in path_like()) {
        match Ref::parse("id", &text) {
            Ok(Ref::Id(id)) => {
                prop_assert!(text.bytes().all(|b| b.is_ascii_digit()), "{text:?}");
                prop_assert_eq!(text.parse::<i64>(), Ok(id));
            }
            Ok(Ref::Path(path)) => {
                prop_assert_eq!(&path, &text);
                prop_assert!(path.len() <= MAX_FULL_PATH);
                // Every group and project path is a repository name docker can push to.
                prop_assert!(path.parse::<RepositoryName>().is_ok(), "{path:?}");
            }
            Err(e) => {
                prop_assert!(e.to_string().starts_with("id "), "{e}");
                refused_briefly(e, &text)?;
            }
        }
    }

    #[test]
    fn a_path_segment_is_one_repository_name_component(text in path_like()) {
        let as_component = !text.contains('/') && text.len() <= 255
            && text.parse::<RepositoryName>().is_ok();
        match PathSegment::parse(&text) {
            Ok(segment) => {
                prop_assert_eq!(segment.as_str(), text.as_str());
                prop_assert!(as_component, "{text:?} is a segment but not a name component");
            }
            Err(e) => {
                prop_assert!(!as_component || text.len() > 255, "{text:?} was refused: {e}");
                refused_briefly(e, &text)?;
            }
        }
        // Digits are an id; anything else is a path exactly when it could be one.
        if !text.bytes().all(|b| b.is_ascii_digit()) || text.is_empty() {
            prop_assert_eq!(why_not_full_path(&text).is_none(), Ref::parse("id", &text).is_ok());
        }
    }

    #[test]
    fn a_path_derived_from_a_name_is_a_valid_segment(name in any::<String>()) {
        if let Ok(segment) = PathSegment::from_name(&name) {
            prop_assert!(PathSegment::parse(segment.as_str()).is_ok());
        }
    }

    #[test]
    fn pages_never_overflow(page in prop::option::of(any::<i64>()), per_page in prop::option::of(any::<i64>())) {
        match Page::parse(page, per_page) {
            Ok(p) => {
                prop_assert!((1..=Page::MAX).contains(&p.number));
                prop_assert!((1..=Page::MAX_PER_PAGE).contains(&p.per_page));
                prop_assert!(p.offset() >= 0);
                prop_assert_eq!(p.offset(), (p.number - 1) * p.per_page);
            }
            Err(e) => {
                prop_assert!(page.is_some_and(|n| n > Page::MAX));
                refused_briefly(e, "")?;
            }
        }
    }
}

/// A request's parameters, in the three forms GitLab takes them.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Parameters {
    #[serde(default, deserialize_with = "api::input::int")]
    page: Option<i64>,
    #[serde(default, deserialize_with = "api::input::flag")]
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "api::input::list")]
    scopes: Option<Vec<String>>,
    name: Option<String>,
    expires_at: Option<String>,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().unwrap()
}

fn param_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(json!(u64::MAX)),
        Just(json!(1.5)),
        "[0-9 +-]{0,22}".prop_map(Value::from),
        prop_oneof![Just("true"), Just("false"), Just("1"), Just("0"), Just("")]
            .prop_map(Value::from),
        "[a-z_, ]{0,12}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        Just(json!("a\u{0}b")),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::btree_map("[a-z\\x00]{1,4}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn form_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "((page|enabled|scopes(\\[\\])?|name|expires_at|x)=[A-Za-z0-9%+,._-]{0,10}&?){0,5}",
        "[A-Za-z0-9%&=\\[\\]+]{0,30}",
    ]
}

proptest! {
    #![proptest_config(config(1500))]

    #[test]
    fn parameters_parse_or_are_refused_with_a_400(
        query in prop::option::of(form_text()),
        content_type in prop::option::of(prop_oneof![
            Just("application/json".to_string()),
            Just("application/x-www-form-urlencoded".to_string()),
            Just("APPLICATION/X-WWW-FORM-URLENCODED; charset=utf-8".to_string()),
            "[a-z/+-]{0,20}",
        ]),
        body in prop_oneof![
            Just(Vec::new()),
            prop::collection::btree_map(
                prop_oneof![Just("page".to_string()), Just("enabled".to_string()),
                            Just("scopes".to_string()), Just("name".to_string()),
                            Just("expires_at".to_string()), "[a-z\\x00]{1,5}"],
                param_value(), 0..5,
            ).prop_map(|m| Value::Object(m.into_iter().collect()).to_string().into_bytes()),
            form_text().prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..40),
        ],
    ) {
        let uri = match &query {
            Some(q) => format!("/api/v4/x?{q}"),
            None => "/api/v4/x".to_string(),
        };
        let mut builder = axum::http::Request::post(uri.as_str());
        if let Some(ct) = &content_type {
            builder = builder.header("content-type", ct.as_str());
        }
        let Ok(request) = builder.body(axum::body::Body::from(body.clone())) else {
            return Ok(()); // not an HTTP request at all
        };
        let parsed = runtime().block_on(Params::<Parameters>::from_request(request, &()));
        match parsed {
            Ok(Params(p)) => {
                for text in p.name.iter().chain(p.expires_at.iter()).chain(p.scopes.iter().flatten()) {
                    prop_assert!(!text.contains('\0'), "a NUL got through: {p:?}");
                }
            }
            Err(e) => refused_briefly(e, &String::from_utf8_lossy(&body))?,
        }
    }

    #[test]
    fn numbers_and_flags_as_strings(s in prop_oneof!["[ +-]?[0-9]{0,20} ?", "(?i)true|false", any::<String>()]) {
        let parsed: Result<Parameters, _> = serde_json::from_value(json!({"page": s, "enabled": s}));
        let number = s.trim().parse::<i64>().ok();
        // GitLab's booleans: true/false/1/0 in any case (`True` from Python).
        let flag = match s.to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" | "" => Some(false),
            _ => None,
        };
        match parsed {
            Ok(p) => {
                prop_assert_eq!(p.page, if s.is_empty() { None } else { number });
                prop_assert_eq!(p.enabled, flag);
            }
            Err(e) => {
                prop_assert!((number.is_none() && !s.is_empty()) || flag.is_none());
                prop_assert!(e.to_string().len() < 600);
            }
        }
    }
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn expiry_dates_have_one_spelling(
        text in prop_oneof![
            "[0-9]{4}-[0-9]{2}-[0-9]{2}",
            "[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9:.Z]{0,12}|[ a-z]{1,3})",
            "[+ -]?[0-9+-]{9,11}",
            any::<String>(),
        ]
    ) {
        match api::time::parse_expiry_date(&text) {
            Ok(ms) => {
                prop_assert_eq!(ms % 86_400_000, 0, "a day's start");
                // The day the answer shows is the day that was given.
                prop_assert_eq!(api::time::date(ms), text[..10].to_string());
                let rest = &text[10..];
                prop_assert!(rest.is_empty() || rest.starts_with('T'), "{text:?}");
            }
            Err(e) => refused_briefly(e, &text)?,
        }
    }

    #[test]
    fn every_calendar_day_round_trips(days in 0..2_932_896i64) {
        // 1970-01-01 up to 9999-12-31.
        let ms = days * 86_400_000;
        let text = api::time::date(ms);
        prop_assert_eq!(api::time::parse_expiry_date(&text).unwrap(), ms);
    }

    #[test]
    fn durations_never_overflow(
        text in prop_oneof![
            "[0-9]{1,22} ?(s|m|min|h|d|w|mo|month|y|years|days|Weeks|x)",
            "[0-9a-z +-]{0,10}",
            any::<String>(),
        ]
    ) {
        match parse_duration_ms(&text) {
            Ok(ms) => prop_assert!(ms >= 0),
            Err(e) => refused_briefly(e, &text)?,
        }
    }
}

/// Regex patterns as users write them, and as attackers do.
fn pattern() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z.*+?|()\\[\\]^$\\\\{}0-9,-]{0,16}",
        Just("a)|(b".to_string()),
        Just(")|(".to_string()),
        Just("(a{1000}){1000}".to_string()),
        Just("\\w{500}".to_string()),
        Just("((((((((((a*)*)*)*)*)*)*)*)*)*)".to_string()),
        "\\(\\{0,3\\}[a-z]\\)\\{0,3\\}",
        "\\(?(\\\\p\\{[A-Za-z]{1,8}\\}|\\\\[dDwWsSbB])\\{[0-9]{1,4}\\}\\)?",
        "[(]{40,80}",
        any::<String>(),
    ]
}

fn tags() -> Vec<(String, i64)> {
    ["latest", "v1", "v1.2", "a", "b", "ab", "a)|(b", "", "x".repeat(128).as_str()]
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as i64))
        .collect()
}

proptest! {
    #![proptest_config(config(600))]

    #[test]
    fn cleanup_regexes_are_whole_name_regexes_or_a_400(
        delete in pattern(), keep in prop::option::of(pattern()),
    ) {
        let valid = |p: &str| meta::tag_regex(p).is_ok();
        match TagCleanup::new(Some(&delete), keep.as_deref(), None, None) {
            Ok(cleanup) => {
                prop_assert!(valid(&delete), "{delete:?} is no regex on its own");
                let doomed = cleanup.doomed(&tags(), 100);
                // Matched against whole names: what the delete pattern takes is exactly the
                // names it matches from start to end.
                let whole = meta::tag_regex(&format!("^(?:{delete})$")).unwrap();
                for name in &doomed {
                    prop_assert!(whole.is_match(name), "{delete:?} took {name:?}");
                    prop_assert_ne!(name.as_str(), "latest");
                }
            }
            Err(e) => {
                prop_assert!(!valid(&delete) || keep.as_deref().is_some_and(|k| !k.is_empty() && !valid(k)));
                refused_briefly(e.into(), &delete)?;
            }
        }
    }

    #[test]
    fn tag_protection_patterns_compile_or_are_refused(p in pattern()) {
        match meta::compile_tag_pattern(&p) {
            Ok(re) => {
                prop_assert!(!p.is_empty() && p.chars().count() <= meta::MAX_TAG_PATTERN_CHARS);
                for (tag, _) in tags() {
                    let _ = re.is_match(&tag);
                }
            }
            Err(message) => prop_assert!(message.len() < 2000, "{message}"),
        }
    }

    #[test]
    fn repository_wildcards_match_as_a_regex_would(
        pattern in "[ab*/]{0,8}", name in "[ab/]{0,10}",
    ) {
        let oracle = format!(
            "^{}$",
            pattern.split('*').map(regex::escape).collect::<Vec<_>>().join(".*")
        );
        let expected = regex::Regex::new(&oracle).unwrap().is_match(&name);
        prop_assert_eq!(meta::wildcard_match(&pattern, &name), expected, "{} {}", pattern, name);
    }
}
