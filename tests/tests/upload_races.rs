//! Racing uploads cannot poison a blob (issue 9). Two clients PATCH one upload session at
//! once, one of them slowly, on one instance and across two instances sharing a database and
//! a blob directory; every blob the registry then serves must have the digest it is served
//! under, and the session must end in a defined state (never a 5xx). A re-push of the right
//! bytes replaces whatever bad object sits under a digest.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use e2e::{backend_tests, random_bytes, sha256_digest, unique_repo, MetaBackend, TestServer};
use futures::StreamExt;
use rand::Rng;
use reqwest::Method;
use tokio::sync::oneshot;

backend_tests!(
    racing_patches_on_one_instance,
    repush_replaces_a_bad_object_under_the_digest,
    purge_removes_every_object_an_upload_left,
);

const TRIALS: usize = 30;
const MIB: usize = 1024 * 1024;

/// How the two PATCHes of one trial meet.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Meeting {
    /// B's body is still trickling in when A's PATCH and PUT finish: the case, where
    /// the loser used to keep writing into the published blob.
    LoserOutlivesTheCommit,
    /// B's body ends after A's PATCH landed and before A's PUT.
    LoserEndsBeforeTheCommit,
    /// Both PATCH bodies are sent at once; either may land first.
    Together,
    /// A sends its bytes with the closing PUT while B PATCHes.
    PutWithBodyAgainstPatch,
}

const MEETINGS: [Meeting; 4] = [
    Meeting::LoserOutlivesTheCommit,
    Meeting::LoserEndsBeforeTheCommit,
    Meeting::Together,
    Meeting::PutWithBodyAgainstPatch,
];

/// An HTTP status, or 0 when the request got no answer at all.
async fn status_of(resp: reqwest::Result<reqwest::Response>) -> u16 {
    match resp {
        Ok(resp) => resp.status().as_u16(),
        Err(e) => {
            eprintln!("no answer: {e:?}");
            0
        }
    }
}

/// A body that sends its first 256 KiB, tells `started`, waits for `release`, then trickles
/// the rest in 64 KiB pieces.
fn held_body(
    data: &[u8],
    started: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
) -> reqwest::Body {
    const PIECE: usize = 64 * 1024;
    const HOLD_AT: usize = 4;
    let pieces: Vec<Bytes> = data.chunks(PIECE).map(Bytes::copy_from_slice).collect();
    let mut gate = Some((started, release));
    let stream = futures::stream::iter(pieces.into_iter().enumerate()).then(move |(i, piece)| {
        let gate = if i == HOLD_AT { gate.take() } else { None };
        async move {
            if let Some((started, release)) = gate {
                let _ = started.send(());
                let _ = release.await;
            }
            Ok::<_, std::io::Error>(piece)
        }
    });
    reqwest::Body::wrap_stream(stream)
}

fn patch(
    reg: &Registry,
    location: &str,
    len: usize,
    body: reqwest::Body,
) -> reqwest::RequestBuilder {
    reg.req(Method::PATCH, location)
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", format!("0-{}", len - 1))
        .body(body)
}

fn put(
    reg: &Registry,
    location: &str,
    digest: &str,
    body: Option<Vec<u8>>,
) -> reqwest::RequestBuilder {
    let req = reg.req(Method::PUT, &with_query(location, &format!("digest={digest}")));
    match body {
        Some(body) => req.header("Content-Type", "application/octet-stream").body(body),
        None => req.header("Content-Length", "0").body(Vec::new()),
    }
}

/// Every blob served under `digest` in `repo` must have that digest. Returns the status.
async fn served_blob_is_intact(reg: &Registry, repo: &str, digest: &str) -> u16 {
    let resp = reg.get(&format!("/v2/{repo}/blobs/{digest}")).await;
    let status = resp.status().as_u16();
    if status == 200 {
        let body = resp.bytes().await.unwrap();
        assert_eq!(sha256_digest(&body), digest, "the registry serves other bytes under {digest}");
    } else {
        assert_eq!(status, 404, "GET blob {digest}");
    }
    status
}

/// Waits until upload `id` has an object in storage: a request is past its checks and
/// writing its body.
async fn wait_for_a_part(server: &TestServer, id: &str) {
    let dir = server.data_dir().join("data/uploads").join(id);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&dir).map(|mut d| d.next().is_none()).unwrap_or(true) {
        assert!(std::time::Instant::now() < deadline, "no part of upload {id} appeared");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One race: client A (on `a_side`) uploads `a` and closes the session with `sha256(a)`,
/// while client B (on `b_side`) PATCHes `b` into the same session as `meeting` says.
async fn race_once(
    a_side: &Registry,
    b_side: &Registry,
    repo: &str,
    meeting: Meeting,
    trial: usize,
) {
    let (len_a, len_b) = {
        let mut rng = rand::thread_rng();
        (rng.gen_range(MIB..=8 * MIB), rng.gen_range(MIB..=8 * MIB))
    };
    let (a, b) = (random_bytes(len_a), random_bytes(len_b));
    let (digest_a, digest_b) = (sha256_digest(&a), sha256_digest(&b));
    let location = a_side.start_upload(repo).await;
    let id = location.rsplit('/').next().unwrap().to_string();
    let what = format!("trial {trial} ({meeting:?}, A {len_a} bytes, B {len_b} bytes)");

    let (patch_a, patch_b, put_a) = match meeting {
        Meeting::LoserOutlivesTheCommit | Meeting::LoserEndsBeforeTheCommit => {
            let (started, has_started) = oneshot::channel();
            let (release, released) = oneshot::channel();
            let slow = patch(b_side, &location, len_b, held_body(&b, started, released)).send();
            let slow = tokio::spawn(slow);
            // B's first 256 KiB are on their way, and B's part is being written.
            let _ = has_started.await;
            wait_for_a_part(&b_side.server, &id).await;
            let patch_a = patch(a_side, &location, len_a, a.clone().into()).send().await;
            let patch_a = status_of(patch_a).await;
            let mut release = Some(release);
            if meeting == Meeting::LoserEndsBeforeTheCommit {
                let _ = release.take().unwrap().send(());
            }
            let (patch_b, put_a) = tokio::time::timeout(Duration::from_secs(60), async {
                if let Some(release) = release.take() {
                    // Close A's session first, with B still sending.
                    let put_a =
                        status_of(put(a_side, &location, &digest_a, None).send().await).await;
                    let _ = release.send(());
                    (status_of(slow.await.unwrap()).await, put_a)
                } else {
                    let patch_b = status_of(slow.await.unwrap()).await;
                    let put_a =
                        status_of(put(a_side, &location, &digest_a, None).send().await).await;
                    (patch_b, put_a)
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{what}: B's PATCH got no answer within 60 s"));
            (patch_a, patch_b, put_a)
        }
        Meeting::Together => {
            let (patch_a, patch_b) = tokio::join!(
                patch(a_side, &location, len_a, a.clone().into()).send(),
                patch(b_side, &location, len_b, b.clone().into()).send(),
            );
            let (patch_a, patch_b) = (status_of(patch_a).await, status_of(patch_b).await);
            let put_a = status_of(put(a_side, &location, &digest_a, None).send().await).await;
            (patch_a, patch_b, put_a)
        }
        Meeting::PutWithBodyAgainstPatch => {
            let (put_a, patch_b) = tokio::join!(
                put(a_side, &location, &digest_a, Some(a.clone())).send(),
                patch(b_side, &location, len_b, b.clone().into()).send(),
            );
            (202, status_of(patch_b).await, status_of(put_a).await)
        }
    };
    let what = format!("{what}: PATCH A {patch_a}, PATCH B {patch_b}, PUT A {put_a}");

    // Never a server error, and only the answers a client can act on. A PATCH refused
    // before its body was read (it started at an offset the session no longer has) may
    // reach its client as a closed connection (0) instead of the 416 or 404 the server sent
    // before closing it; that only happens when both bodies are sent at once.
    let refusals: &[u16] = match meeting {
        Meeting::Together | Meeting::PutWithBodyAgainstPatch => &[0, 404, 416],
        _ => &[404, 416],
    };
    assert!(patch_a == 202 || refusals.contains(&patch_a), "{what}");
    assert!(patch_b == 202 || refusals.contains(&patch_b), "{what}");
    assert!([201, 400, 404, 416].contains(&put_a), "{what}");
    match meeting {
        Meeting::LoserOutlivesTheCommit => {
            assert_eq!((patch_a, put_a), (202, 201), "{what}");
            assert!([404, 416].contains(&patch_b), "{what}");
        }
        Meeting::LoserEndsBeforeTheCommit => {
            assert_eq!((patch_a, patch_b, put_a), (202, 416, 201), "{what}");
        }
        Meeting::Together => {
            let landed = [patch_a, patch_b].iter().filter(|s| **s == 202).count();
            assert_eq!(landed, 1, "exactly one PATCH lands: {what}");
            let expected_put = if patch_a == 202 { 201 } else { 400 };
            assert_eq!(put_a, expected_put, "{what}");
        }
        Meeting::PutWithBodyAgainstPatch => {
            // A's body lands first and its PUT publishes it; or B's lands first, and A's
            // body either loses the offset (416) or lands after B's, failing the digest (400).
            assert_ne!(put_a == 201, patch_b == 202, "exactly one lands first: {what}");
        }
    }

    // Every blob either side serves is intact; A's is there exactly when its PUT said so.
    for side in [a_side, b_side] {
        let served_a = served_blob_is_intact(side, repo, &digest_a).await;
        assert_eq!(served_a == 200, put_a == 201, "{what}: GET A's blob answered {served_a}");
        assert_eq!(served_blob_is_intact(side, repo, &digest_b).await, 404, "{what}");
    }

    // The session ended, or (B landed and A's PUT lost) it holds B's bytes and can be
    // cancelled; either way nothing of it stays in storage.
    let session = a_side.get(&location).await.status().as_u16();
    match session {
        404 => {}
        204 => {
            assert_eq!(patch_b, 202, "{what}: the session is still open");
            assert_eq!(a_side.delete(&location).await.status().as_u16(), 204, "{what}");
        }
        other => panic!("{what}: upload status {other}"),
    }
    assert!(!a_side.data_dir_mentions(&id), "{what}: objects of upload {id} were left behind");
}

async fn race_many(a_side: &Registry, b_side: &Registry) {
    if external() {
        return; // the races are timed by what the server's storage holds
    }
    let repo = unique_repo("race");
    for trial in 0..TRIALS {
        race_once(a_side, b_side, &repo, MEETINGS[trial % MEETINGS.len()], trial).await;
    }
}

/// A client that opens a connection per request. A PATCH refused before its body was read
/// (it started at a stale offset) makes the server close that connection once it has
/// answered; a pooled client may already have picked the connection for its next request and
/// then sees it closed, which says nothing about the registry's state.
fn unpooled_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

async fn racing_patches_on_one_instance(backend: MetaBackend) {
    let mut reg = Registry::start(backend);
    reg.http = unpooled_client();
    race_many(&reg, &reg).await;
    assert!(!reg.server.log().contains("ERROR"), "a race logged an error");
}

/// Two `stowage serve` processes on one PostgreSQL database and one blob directory (SQLite
/// means one process). A talks to one, B to the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_patches_across_two_instances() {
    let mut first = Registry::start(MetaBackend::Postgres);
    first.http = unpooled_client();
    let second = Registry { server: first.server.start_sibling(), http: unpooled_client() };
    race_many(&first, &second).await;
    race_many(&second, &first).await;
    for reg in [&first, &second] {
        assert!(!reg.server.log().contains("ERROR"), "a race logged an error");
    }
    drop(second);
}

/// Where the filesystem backend keeps `digest`'s bytes.
fn blob_path(server: &TestServer, digest: &str) -> std::path::PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    server.data_dir().join("data/blobs/sha256").join(&hex[..2]).join(hex)
}

fn plant(server: &TestServer, digest: &str, bytes: &[u8]) {
    let path = blob_path(server, digest);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
}

async fn assert_serves(reg: &Registry, repo: &str, digest: &str, data: &[u8]) {
    let resp = reg.get(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_status(&resp, 200);
    let body = resp.bytes().await.unwrap();
    assert!(
        body.as_ref() == data,
        "GET {repo} {digest}: {} bytes, not the pushed ones",
        body.len()
    );
}

/// An object under a digest (planted before any push, or damaged after one) never shadows
/// a push of the right bytes: the push publishes verified bytes over it.
async fn repush_replaces_a_bad_object_under_the_digest(backend: MetaBackend) {
    let reg = Registry::start(backend);
    if external() {
        return; // needs the server's storage
    }
    let (repo, other) = (unique_repo("shadow"), unique_repo("shadow-other"));
    let data = random_bytes(3 * MIB + 17);
    let digest = sha256_digest(&data);

    // Planted before the first push: same size, other bytes.
    plant(&reg.server, &digest, &random_bytes(data.len()));
    assert_eq!(reg.push_blob(&repo, &data).await, digest);
    assert_serves(&reg, &repo, &digest, &data).await;

    // Damaged after the push; the right bytes pushed again by anyone, anywhere, in chunks.
    plant(&reg.server, &digest, b"not the layer");
    let location = reg.start_upload(&other).await;
    let resp = patch(&reg, &location, MIB, data[..MIB].to_vec().into()).send().await.unwrap();
    assert_status(&resp, 202);
    let resp = put(&reg, &location, &digest, Some(data[MIB..].to_vec())).send().await.unwrap();
    assert_status(&resp, 201);
    assert_serves(&reg, &other, &digest, &data).await;
    assert_serves(&reg, &repo, &digest, &data).await;

    // And once more with a single POST, over a same-size bad object.
    plant(&reg.server, &digest, &random_bytes(data.len()));
    let resp = reg
        .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={digest}"))
        .header("Content-Type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_status(&resp, 201);
    assert_serves(&reg, &repo, &digest, &data).await;
    assert_eq!(std::fs::read(blob_path(&reg.server, &digest)).unwrap(), data);

    // A push of other bytes under the digest is refused and does not touch the object.
    let resp = reg
        .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={digest}"))
        .header("Content-Type", "application/octet-stream")
        .body(random_bytes(data.len()))
        .send()
        .await
        .unwrap();
    assert_oci_error(resp, &[400], &["DIGEST_INVALID"]).await;
    assert_serves(&reg, &repo, &digest, &data).await;
}

/// The purge removes everything stored under an idle session's prefix, not only the parts
/// the database lists (a losing request that crashed leaves an object nobody recorded), and
/// objects of sessions the database no longer knows (a crash between ending a session and
/// removing its objects).
async fn purge_removes_every_object_an_upload_left(backend: MetaBackend) {
    if external() {
        return;
    }
    let reg = Registry {
        server: TestServer::start_with(
            backend,
            &[
                ("STOWAGE_STORAGE__MAINTENANCE__UPLOADPURGING__AGE", "1s"),
                ("STOWAGE_STORAGE__MAINTENANCE__UPLOADPURGING__INTERVAL", "1s"),
            ],
        ),
        http: unpooled_client(),
    };
    let repo = unique_repo("purge-all");
    let location = reg.start_upload(&repo).await;
    let id = location.rsplit('/').next().unwrap().to_string();
    let resp = patch(&reg, &location, 4096, vec![7u8; 4096].into()).send().await.unwrap();
    assert_status(&resp, 202);
    let uploads = reg.server.data_dir().join("data/uploads");
    // A loser's object that survived a crash, in the live session…
    std::fs::write(uploads.join(&id).join("0123456789abcdef0123456789abcdef"), b"lost").unwrap();
    // …and the objects of a session the database has forgotten.
    let forgotten = "5d4f3c2b-1a09-4876-8543-210fedcba987";
    std::fs::create_dir_all(uploads.join(forgotten)).unwrap();
    std::fs::write(uploads.join(forgotten).join("fedcba98765432100123456789abcdef"), b"x").unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while reg.data_dir_mentions(&id) || reg.data_dir_mentions(forgotten) {
        assert!(std::time::Instant::now() < deadline, "the purge left objects behind");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_oci_error(reg.get(&location).await, &[404], &["BLOB_UPLOAD_UNKNOWN"]).await;
}
