//! `batchwatch user ...`: tokens are shown once, stored as hashes, listed without secrets and
//! revocable, through the real binary and a real SQLite file.

use std::process::Command;

use batchwatch_core::Role;
use server::store::Store;

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn batchwatch(database_url: &str, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_batchwatch"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn field<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in {stdout}"))
}

#[tokio::test]
async fn a_token_is_shown_once_stored_hashed_and_revocable() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/accounts.db", dir.path().display());

    let created = batchwatch(&db, &["user", "create", "alice"]);
    assert!(created.ok, "{}", created.stderr);
    let token = field(&created.stdout, "token:").to_owned();
    let token_id = field(&created.stdout, "token id:").to_owned();
    assert!(token.starts_with("bw_"));
    assert!(created.stderr.contains("cannot be shown again"));

    let accounts = Store::connect(&db, 1).await.unwrap().accounts();
    let who = accounts.authenticate(&token).await.unwrap().expect("the new token works");
    assert_eq!(
        (who.viewer.name.as_str(), who.role, who.token_id.as_str()),
        ("alice", Role::User, token_id.as_str())
    );
    assert_eq!(accounts.authenticate("bw_not-a-token").await.unwrap(), None);

    // Only a hash is kept. The files are searched by another process: opening and closing
    // the database file in this one would drop SQLite's POSIX locks for the open pool.
    let secret_hex = &token[3..];
    let found = Command::new("grep").args(["-rlF", secret_hex]).arg(dir.path()).output().unwrap();
    assert_eq!(
        found.status.code(),
        Some(1),
        "the secret is stored in {}",
        String::from_utf8_lossy(&found.stdout)
    );

    let listed = batchwatch(&db, &["user", "list"]);
    assert!(
        listed.stdout.contains(&token_id)
            && listed.stdout.contains("alice")
            && listed.stdout.contains("active")
    );
    assert!(!listed.stdout.contains(secret_hex), "a list never shows secrets");

    let revoked = batchwatch(&db, &["user", "revoke", &token_id]);
    assert!(revoked.ok, "{}", revoked.stderr);
    assert_eq!(accounts.authenticate(&token).await.unwrap(), None, "a revoked token stops working at once");
    assert!(batchwatch(&db, &["user", "list"]).stdout.contains("revoked"));

    // A second token for alice works on its own.
    let second = batchwatch(&db, &["user", "token", "alice"]);
    let second = field(&second.stdout, "token:").to_owned();
    assert_ne!(second, token);
    assert!(accounts.authenticate(&second).await.unwrap().is_some());
}

#[tokio::test]
async fn worker_tokens_and_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/accounts.db", dir.path().display());
    let worker = batchwatch(&db, &["user", "create", "resizer", "--worker"]);
    let token = field(&worker.stdout, "token:").to_owned();
    let accounts = Store::connect(&db, 1).await.unwrap().accounts();
    assert_eq!(accounts.authenticate(&token).await.unwrap().unwrap().role, Role::Worker);

    let again = batchwatch(&db, &["user", "create", "resizer"]);
    assert!(!again.ok && again.stderr.contains("exists already"), "{}", again.stderr);
    assert!(!batchwatch(&db, &["user", "token", "nobody"]).ok);
    assert!(!batchwatch(&db, &["user", "revoke", "no-such-token"]).ok);
    assert!(!batchwatch(&db, &["user", "create", "  "]).ok);
    let spoof = batchwatch(&db, &["user", "create", "admin\u{202E}nimda"]);
    assert!(!spoof.ok && spoof.stderr.contains("must not hold"), "{}", spoof.stderr);
    assert_eq!(accounts.user_count().await.unwrap(), 1, "failed commands wrote nothing");
}

/// Starts `batchwatch` with `DEMO_SIGN_IN` and returns its first lines up to the sign-in line,
/// then stops it.
fn demo_start(database_url: &str) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_batchwatch"))
        .env("DATABASE_URL", database_url)
        .env("DEMO_SIGN_IN", "true")
        .env("REDIS_URL", "memory://")
        .env("WORKERS", "0")
        .env("LEPTOS_SITE_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let done = line.contains("sign in") || line.contains("Sign in");
        lines.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

#[tokio::test]
async fn a_first_demo_run_creates_a_user_and_prints_a_link_that_signs_in() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/demo.db", dir.path().display());
    let first = demo_start(&db);
    let link = first
        .iter()
        .find_map(|l| l.split_whitespace().find(|w| w.contains("/login#token=")))
        .unwrap_or_else(|| panic!("no link in {first:?}"));
    let token = link.split_once("#token=").unwrap().1;
    let accounts = Store::connect(&db, 1).await.unwrap().accounts();
    let who = accounts.authenticate(token).await.unwrap().expect("the link's token signs in");
    assert_eq!((who.viewer.name.as_str(), who.role), ("demo", Role::User));

    let again = demo_start(&db);
    assert!(again.iter().all(|l| !l.contains("#token=")), "a second run makes no new user: {again:?}");
    assert_eq!(accounts.user_count().await.unwrap(), 1);
}
