//! The operator's first contact: configuration mistakes stop the server at start with a message
//! naming the key and the accepted values, `config check` / `config show`, an unreachable
//! database that fails at once with the cause, the CLI's help, completions and man page, and
//! admin commands that refuse to invent a database.

use std::time::Duration;

use e2e::cli::{run_stowage, Run};
use e2e::{MetaBackend, TestServer};

const TIMEOUT: Duration = Duration::from_secs(30);

/// `stowage <args>` in a fresh directory with a YAML file (if any) and variables.
fn stowage(args: &[&str], yaml: Option<&str>, env: &[(&str, &str)]) -> (Run, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env: Vec<(&str, &str)> = env.to_vec();
    env.push(("STOWAGE_HTTP_ADDR", "127.0.0.1:0"));
    let file = dir.path().join("stowage.yml");
    let file_arg = file.to_str().unwrap().to_string();
    if let Some(yaml) = yaml {
        std::fs::write(&file, yaml).unwrap();
        env.push(("STOWAGE_CONFIG", &file_arg));
    }
    let run = run_stowage(args, &env, dir.path(), TIMEOUT);
    (run, dir)
}

/// Each mistake, through `serve` (which must not start) and `config check` (exit 1), gives
/// the same message; `{file}` stands for the YAML file.
#[test]
fn bad_keys_and_values_stop_the_server_with_the_key_and_accepted_values() {
    let unknown = "unknown key; known keys here: data_dir, http, database, storage";
    // (what, YAML file, variables, expected stderr: exact if it ends in a newline, else its start)
    type Case<'a> = (&'a str, Option<&'a str>, Vec<(&'a str, &'a str)>, String);
    let cases: Vec<Case> = vec![
        (
            "unknown top-level key in YAML",
            Some("htp:\n  addr: 127.0.0.1:0\n"),
            vec![],
            format!("error: invalid configuration: htp (in {{file}}): {unknown}"),
        ),
        (
            "unknown nested key in YAML",
            Some("http:\n  timeout:\n    idle: 5s\n"),
            vec![],
            "error: invalid configuration: http.timeout (in {file}): unknown key; known keys \
             here: addr, host, timeouts, max_connections, trusted_proxies, debug, tls, \
             draintimeout\n"
                .into(),
        ),
        (
            "variable without the __ level separator",
            None,
            vec![("STOWAGE_AUTH_MODE", "none")],
            format!("error: invalid configuration: auth_mode (environment variable STOWAGE_AUTH_MODE): {unknown}"),
        ),
        (
            "unknown nested variable",
            None,
            vec![("STOWAGE_HTTP__TIMEOUTS__IDEL", "5s")],
            "error: invalid configuration: http.timeouts.idel (environment variable \
             STOWAGE_HTTP__TIMEOUTS__IDEL): unknown key; known keys here: header_read, idle\n"
                .into(),
        ),
        (
            "log.level verbose",
            Some("log:\n  level: verbose\n"),
            vec![],
            "error: invalid configuration: log.level (in {file}): \"verbose\" is not accepted; \
             use one of: error, warn, info, debug, trace\n"
                .into(),
        ),
        (
            "log.formatter xml from the environment",
            None,
            vec![("STOWAGE_LOG__FORMATTER", "xml")],
            "error: invalid configuration: log.formatter (environment variable \
             STOWAGE_LOG__FORMATTER): \"xml\" is not accepted; use one of: text, json\n"
                .into(),
        ),
        (
            "auth.mode",
            Some("auth:\n  mode: open\n"),
            vec![],
            "error: invalid configuration: auth.mode (in {file}): \"open\" is not accepted; \
             use one of: token, none\n"
                .into(),
        ),
        (
            "http.host not a URL",
            Some("http:\n  host: not-a-url\n"),
            vec![],
            "error: http.host must be the URL clients reach the registry at, with http:// or \
             https://, e.g. https://registry.example.com; \"not-a-url\" is not\n"
                .into(),
        ),
    ];
    for (what, yaml, env, expected) in &cases {
        for args in [&["serve"][..], &["config", "check"][..]] {
            let (run, dir) = stowage(args, *yaml, env);
            // figment names the file relative to the working directory.
            let expected = expected.replace("{file}", "stowage.yml");
            assert_eq!(run.code(), 1, "{what}, {args:?}: {run:#?}");
            if expected.ends_with('\n') {
                assert_eq!(run.stderr, expected, "{what}, {args:?}");
            } else {
                assert!(run.stderr.starts_with(&expected), "{what}, {args:?}: {}", run.stderr);
            }
            assert!(run.stdout.is_empty(), "{what}: {}", run.stdout);
            assert!(!dir.path().join("data").exists(), "{what}: nothing is created");
        }
    }
    // The suggestion for the missing separator.
    let (run, _dir) = stowage(&["config", "check"], None, &[("STOWAGE_AUTH_MODE", "none")]);
    assert!(
        run.stderr.ends_with(
            " (levels are separated by `__`: did you mean auth.mode, STOWAGE_AUTH__MODE?)\n"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn config_check_accepts_a_valid_configuration() {
    let (run, dir) = stowage(
        &["config", "check"],
        Some("http:\n  host: https://registry.example.com\nlog:\n  level: debug\n"),
        &[("STOWAGE_AUTH__MODE", "none"), ("STOWAGE_LOG__FORMATTER", "json")],
    );
    assert_eq!(run.code(), 0, "{run:#?}");
    assert_eq!(run.stdout, "configuration is valid\n");
    assert!(!dir.path().join("data").exists(), "config check creates nothing");
}

/// `config show`: every key resolved (file < environment, defaults filled in, the database
/// and blob root derived from the data dir), secrets masked.
#[test]
fn config_show_resolves_everything_and_masks_secrets() {
    let (run, dir) = stowage(
        &["config", "show"],
        Some("log:\n  level: debug\ndatabase:\n  url: postgres://stowage:file-sekrit@db.example:5432/registry\n"),
        &[
            ("STOWAGE_LOG__FORMATTER", "json"),
            ("STOWAGE_ADMIN_PASSWORD", "admin-sekrit"),
            ("STOWAGE_DATA_DIR", "/srv/stowage"),
        ],
    );
    assert_eq!(run.code(), 0, "{run:#?}");
    let out = &run.stdout;
    assert!(!out.contains("sekrit"), "secrets must be masked:\n{out}");
    for line in [
        "data_dir: /srv/stowage\n",
        "  addr: 127.0.0.1:0\n",
        "  url: postgres://stowage:***@db.example:5432/registry\n",
        "    rootdirectory: /srv/stowage\n",
        "  level: debug\n",
        "  formatter: json\n",
        "  mode: token\n",
        "  token_lifetime: 5m\n",
        "      age: 24h\n",
        "  max_connections: 1024\n",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    // Without a database URL, the SQLite file in the data dir (not created by showing it).
    let (run, dir2) = stowage(&["config", "show"], None, &[]);
    let data = dir2.path().join("data");
    assert!(
        run.stdout.contains(&format!("  url: sqlite://{}/stowage.db\n", data.display())),
        "{}",
        run.stdout
    );
    assert!(!data.exists() && !dir.path().join("data").exists(), "config show creates nothing");
}

/// A free loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// An unreachable PostgreSQL fails within seconds with the cause, for the server and the
/// admin commands alike (not a 30 s pool timeout).
#[test]
fn unreachable_database_fails_fast_with_the_cause() {
    let port = closed_port();
    let url = format!("postgres://stowage:db-sekrit@127.0.0.1:{port}/registry");
    for args in [&["serve"][..], &["migrate"][..], &["admin", "users", "list"][..]] {
        let (run, _dir) = stowage(args, None, &[("STOWAGE_DATABASE_URL", &url)]);
        assert_eq!(run.code(), 1, "{args:?}: {run:#?}");
        assert!(run.elapsed < Duration::from_secs(5), "{args:?} took {:?}", run.elapsed);
        assert!(
            run.stderr.ends_with(&format!(
                "connection refused to 127.0.0.1:{port}: is the database server running and \
                 listening there?\n"
            )),
            "{args:?}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("db-sekrit"), "{}", run.stderr);
    }
}

#[test]
fn admin_commands_refuse_to_create_a_database() {
    for args in [
        &["admin", "users", "list"][..],
        &["ci-env", "--project", "acme/app"][..],
        &["jobs", "list"][..],
        &["gc", "status"][..],
        &["usage", "recompute"][..],
    ] {
        let (run, dir) = stowage(args, None, &[]);
        let file = dir.path().join("data").join("stowage.db");
        assert_eq!(run.code(), 1, "{args:?}: {run:#?}");
        assert_eq!(
            run.stderr,
            format!(
                "error: no database at {}: point STOWAGE_CONFIG, STOWAGE_DATABASE_URL or \
                 STOWAGE_DATA_DIR at the registry's database (admin commands never create one; \
                 `stowage serve` or `stowage migrate` does)\n",
                file.display()
            )
        );
        assert!(!dir.path().join("data").exists(), "{args:?} created ./data");
    }
    // A SQLite URL naming a missing file is refused too.
    let (run, dir) = stowage(
        &["admin", "groups", "list"],
        None,
        &[("STOWAGE_DATABASE_URL", "sqlite://./elsewhere/stowage.db")],
    );
    assert_eq!(run.code(), 1, "{run:#?}");
    assert!(
        run.stderr.starts_with("error: no database at ./elsewhere/stowage.db"),
        "{}",
        run.stderr
    );
    assert!(!dir.path().join("elsewhere").exists());
}

/// On the server's database, admin commands work and say which database they used (on stderr;
/// stdout stays the command's JSON).
#[test]
fn admin_commands_say_which_database_they_use() {
    let server = TestServer::start(MetaBackend::Sqlite);
    let data = server.data_dir().join("data");
    let dir = tempfile::tempdir().unwrap();
    let run = run_stowage(
        &["admin", "users", "list"],
        &[("STOWAGE_DATA_DIR", data.to_str().unwrap())],
        dir.path(),
        TIMEOUT,
    );
    assert_eq!(run.code(), 0, "{run:#?}");
    let db = std::fs::canonicalize(data.join("stowage.db")).unwrap();
    assert_eq!(run.stderr, format!("using database sqlite://{}\n", db.display()));
    let users: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON on stdout");
    assert!(users.as_array().is_some_and(|u| u.iter().any(|u| u["username"] == "root")));
}

#[test]
fn help_completions_and_man_page() {
    let (run, _dir) = stowage(&["serve", "--help"], None, &[]);
    assert_eq!(run.code(), 0, "{run:#?}");
    for needle in [
        "STOWAGE_CONFIG",
        "STOWAGE_HTTP_ADDR",
        "STOWAGE_HTTP__HOST",
        "STOWAGE_DATA_DIR",
        "STOWAGE_DATABASE_URL",
        "STOWAGE_AUTH__MODE",
        "STOWAGE_LOG__LEVEL",
        "config check",
    ] {
        assert!(run.stdout.contains(needle), "serve --help lacks {needle}:\n{}", run.stdout);
    }
    let (run, _dir) = stowage(&["--help"], None, &[]);
    for sub in ["serve", "migrate", "config", "admin", "ci-env", "completions", "man"] {
        assert!(run.stdout.contains(&format!("  {sub} ")), "--help lacks {sub}:\n{}", run.stdout);
    }
    for (shell, marker) in
        [("bash", "_stowage()"), ("zsh", "#compdef stowage"), ("fish", "complete -c stowage")]
    {
        let (run, _dir) = stowage(&["completions", shell], None, &[]);
        assert_eq!(run.code(), 0, "{shell}: {run:#?}");
        assert!(run.stdout.contains(marker), "{shell} completion:\n{}", run.stdout);
        assert!(run.stdout.contains("cleanup-dry-run"), "{shell}: subcommands are completed");
    }
    let (run, _dir) = stowage(&["completions", "tcsh"], None, &[]);
    assert_eq!(run.code(), 2, "{run:#?}");
    let (run, _dir) = stowage(&["man"], None, &[]);
    assert_eq!(run.code(), 0, "{run:#?}");
    assert!(run.stdout.contains(".TH stowage 1"), "{}", run.stdout);
    assert!(run.stdout.contains("completions"), "the man page lists the subcommands");
}
