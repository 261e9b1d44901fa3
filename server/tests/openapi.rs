//! The JSON API against its own OpenAPI description: schemathesis (from PyPI; `./dev.sh test`
//! installs it and names it in `SCHEMATHESIS`) generates thousands of requests, valid and not,
//! from `/api/openapi.json` and checks every answer: no 5xx, and status, content type, headers
//! and body as described.

mod common;

use common::server::{LiveServer, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_matches_the_openapi_description() {
    let st = std::env::var("SCHEMATHESIS").expect(
        "SCHEMATHESIS names schemathesis's `st`: run the tests through ./dev.sh test, which installs it",
    );
    // Writes unlimited: a 429 is described, but would hide the rest of the answers.
    let server = LiveServer::start(Options { writes_per_minute: 10_000_000, ..Options::default() }).await;
    let reports = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(&st);
    command
        .arg("run")
        .arg(format!("{}/api/openapi.json", server.url))
        .args(["--header", &format!("Authorization: Bearer {}", server.token)])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_headers_conformance,response_schema_conformance,negative_data_rejection,\
             ignored_auth,unsupported_method",
        ])
        // A batch's stream lasts until the batch finishes, a user's for as long as it may:
        // their description is checked by the unit test in `openapi.rs`, their behaviour by
        // `streams.rs` and `home.rs`.
        .args(["--exclude-path", "/api/batches/{id}/stream", "--exclude-path", "/api/stream"])
        // Not the coverage phase: schemathesis 4.32.5 crashes in it on a path parameter
        // (an internal KeyError), whatever the description says.
        .args(["--phases", "examples,fuzzing,stateful"])
        .args(["--max-examples", "150", "--seed", "1", "--no-color", "--workers", "2"])
        .args(["--report", "ndjson", "--report-dir"])
        .arg(reports.path())
        // Its example database too stays out of the tree.
        .current_dir(reports.path());
    // The server runs on this test's runtime: wait for schemathesis off it.
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("running {st}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found answers that break the description:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It ran what it says: thousands of generated requests.
    // "Test cases:\n  1755 generated, 1755 passed, ..."
    let generated = stdout
        .lines()
        .skip_while(|l| l.trim() != "Test cases:")
        .nth(1)
        .and_then(|l| l.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no count of test cases in:\n{stdout}"));
    assert!(generated >= 1_000, "only {generated} requests generated:\n{stdout}");
}
