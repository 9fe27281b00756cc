//! The admin command line as an operator uses it: resetting root's password from stdin, one
//! argument style across `admin` commands (with the older flag spellings still accepted), the
//! first-start password printed only by a server that is actually listening, and a changed
//! `STOWAGE_ADMIN_PASSWORD` reported as ignored instead of silently doing nothing.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use e2e::cli::run_stowage;
use e2e::gitlab::{http_client, request_token, start_auth_server, ADMIN_PASSWORD};
use e2e::{backend_tests, MetaBackend, TestServer};

backend_tests!(
    set_password_reads_stdin_and_applies_the_password_rule,
    admin_subjects_are_positional
);

/// `stowage <args>` against `server`'s database with `stdin` piped in.
fn with_stdin(server: &TestServer, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = server
        .stowage_command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run stowage");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

async fn can_log_in(server: &TestServer, user: &str, password: &str) -> bool {
    request_token(&http_client(), &server.base, Some((user, password)), &[]).await.is_ok()
}

async fn set_password_reads_stdin_and_applies_the_password_rule(backend: MetaBackend) {
    let server = start_auth_server(backend, &[]);
    assert!(can_log_in(&server, "root", ADMIN_PASSWORD).await);

    // Too short: the same rule as the API's, and nothing changes.
    let out = with_stdin(&server, &["admin", "users", "set-password", "root"], "short\n");
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).lines().last().unwrap(),
        "error: password is too short (minimum is 8 characters)"
    );
    assert!(can_log_in(&server, "root", ADMIN_PASSWORD).await);

    // Nothing on stdin is refused with a hint, not taken as an empty password.
    let out = with_stdin(&server, &["admin", "users", "set-password", "root"], "");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("error: no password on stdin: pipe it in"),
        "{out:?}"
    );

    // An unknown user is named as such.
    let out = with_stdin(&server, &["admin", "users", "set-password", "nobody"], "Long-enough-1\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("404 User Not Found"), "{out:?}");

    // One line from stdin, without its line ending (CRLF too), becomes the password.
    let new = "N3w-root-passw0rd with spaces";
    let out =
        with_stdin(&server, &["admin", "users", "set-password", "root"], &format!("{new}\r\n"));
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("password of root changed"));
    let user: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the user as JSON");
    assert_eq!(user["username"], "root");
    assert!(can_log_in(&server, "root", new).await);
    assert!(!can_log_in(&server, "root", ADMIN_PASSWORD).await, "the old password stops working");
}

async fn admin_subjects_are_positional(backend: MetaBackend) {
    let server = TestServer::start(backend);
    let run = |args: &[&str]| {
        let out = server.stowage_command(args).output().expect("run stowage");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), out)
    };
    // The subject is positional everywhere; the older flag spellings still work.
    let (ok, _, out) = run(&["admin", "users", "create", "bob", "--email", "bob@example.com"]);
    assert!(ok, "{out:?}");
    let (ok, _, out) =
        run(&["admin", "users", "create", "--username", "carol", "--email", "c@example.com"]);
    assert!(ok, "{out:?}");
    let (ok, stdout, out) = run(&[
        "admin",
        "tokens",
        "personal",
        "create",
        "bob",
        "--name",
        "ci",
        "--scopes",
        "read_registry",
    ]);
    assert!(ok, "{out:?}");
    let token: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(token["name"], "ci");
    let (ok, stdout, out) = run(&["admin", "tokens", "personal", "list", "bob"]);
    assert!(ok, "{out:?}");
    let (_, old_style, _) = run(&["admin", "tokens", "personal", "list", "--user", "bob"]);
    assert_eq!(stdout, old_style);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&stdout).unwrap()[0]["name"], "ci");

    // Both spellings at once, or neither, is a usage error naming the argument.
    let (ok, _, out) =
        run(&["admin", "users", "create", "dave", "--username", "erin", "--email", "d@x.org"]);
    assert!(!ok);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"), "{out:?}");
    let (ok, _, out) = run(&["admin", "tokens", "personal", "list"]);
    assert!(!ok);
    assert!(String::from_utf8_lossy(&out.stderr).contains("<USER>"), "{out:?}");

    // Job token lifetimes parse like every other duration in the configuration.
    let (ok, _, out) =
        run(&["admin", "tokens", "job", "create", "nope/none", "--lifetime", "1 fortnight"]);
    assert!(!ok);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("is not a duration like 250ms, 90s, 30m, 24h or 7d"),
        "{out:?}"
    );
}

const TIMEOUT: Duration = Duration::from_secs(4);

/// A first start whose listener cannot bind prints no password (it would be the password of
/// nothing reachable); a first start that listens prints it once; a later start with another
/// `STOWAGE_ADMIN_PASSWORD` says it is ignored and how to change the password.
#[test]
fn root_password_is_announced_only_by_a_listening_server() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let run = run_stowage(&["serve"], &[("STOWAGE_HTTP_ADDR", &taken_addr)], dir.path(), TIMEOUT);
    assert_eq!(run.code(), 1, "{run:#?}");
    assert!(run.stderr.contains(&format!("cannot listen on {taken_addr}")), "{run:#?}");
    assert!(!run.stdout.contains("password"), "printed a password without listening: {run:#?}");
    drop(taken);

    // A first start that listens announces the generated password, once.
    let fresh = tempfile::tempdir().unwrap();
    let run =
        run_stowage(&["serve"], &[("STOWAGE_HTTP_ADDR", "127.0.0.1:0")], fresh.path(), TIMEOUT);
    assert!(run.status.is_none(), "serve kept running until stopped: {run:#?}");
    let announced: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(announced.len(), 2, "{run:#?}");
    assert!(announced[0].starts_with("created the instance admin 'root' with password: "));
    assert!(announced[1].contains("stowage admin users set-password root"));

    // A changed STOWAGE_ADMIN_PASSWORD on a later start is ignored, and says so.
    let env =
        [("STOWAGE_HTTP_ADDR", "127.0.0.1:0"), ("STOWAGE_ADMIN_PASSWORD", "Another-passw0rd")];
    let run = run_stowage(&["serve"], &env, fresh.path(), TIMEOUT);
    assert!(run.status.is_none(), "{run:#?}");
    assert!(run.stdout.is_empty(), "{run:#?}");
    assert!(
        run.stderr.contains(
            "STOWAGE_ADMIN_PASSWORD is ignored: it only sets root's password on the first start, \
             and root already has another one; change it with `stowage admin users set-password root`"
        ),
        "{run:#?}"
    );
    // A password that breaks the rule stops the server before it touches anything.
    let env = [("STOWAGE_HTTP_ADDR", "127.0.0.1:0"), ("STOWAGE_ADMIN_PASSWORD", "short")];
    let run = run_stowage(&["serve"], &env, fresh.path(), TIMEOUT);
    assert_eq!(run.code(), 1, "{run:#?}");
    assert!(
        run.stderr.contains("STOWAGE_ADMIN_PASSWORD is too short (minimum is 8 characters)"),
        "{run:#?}"
    );
}
