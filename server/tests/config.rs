//! Settings: `Leptos.toml` (read by the deployed server) and Cargo.toml's
//! `[[workspace.metadata.leptos]]` (read by cargo-leptos) agree on every key they share, and
//! absurd values stop the binary at start.

use toml::Value;

fn read(path: &str) -> Value {
    let text = std::fs::read_to_string(format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    Value::Table(toml::from_str(&text).unwrap())
}

#[test]
fn runtime_and_build_settings_agree() {
    let runtime = read("Leptos.toml")["package"]["metadata"]["leptos"].clone();
    let build = read("Cargo.toml")["workspace"]["metadata"]["leptos"][0].clone();
    // cargo-leptos calls the output name `name`; leptos_config calls it `output-name`.
    assert_eq!(runtime["output-name"], build["name"]);
    let mut shared = 1;
    for (key, value) in runtime.as_table().unwrap() {
        if let Some(built) = build.get(key) {
            shared += 1;
            if key != "env" {
                assert_eq!(value, built, "`{key}` differs between Leptos.toml and Cargo.toml");
            }
        }
    }
    assert!(shared >= 5, "only {shared} shared keys: did a file lose its section?");
}

#[test]
fn runtime_settings_parse() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../Leptos.toml");
    let conf = leptos_config::get_configuration(Some(path)).unwrap();
    assert_eq!(&*conf.leptos_options.output_name, "batchwatch");
}

/// A setting out of its range stops the binary at start with a message naming the variable,
/// before anything is opened; never a panic later (a zero keep-alive panicked tokio's timer).
#[test]
fn absurd_settings_are_refused_at_start_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}/config.db", dir.path().display());
    for (variable, value) in [
        ("STREAM_KEEPALIVE_SECS", "0"),
        ("STREAM_KEEPALIVE_SECS", "-5"),
        ("STREAM_KEEPALIVE_SECS", "99999999999999999999999"),
        ("STREAM_MAX_SECS", "0"),
        ("HEADER_TIMEOUT_SECS", "0"),
        ("DATABASE_MAX_CONNECTIONS", "0"),
        ("CACHE_TTL_SECS", "0"),
        ("SESSION_TTL_SECS", "0"),
        ("WORKER_POLL_MS", "0"),
        ("PROCESSING_LEASE_SECS", "0"),
        ("MAX_STREAMS_PER_USER", "0"),
        ("WRITES_PER_MINUTE", "0"),
        ("WORKER_WRITES_PER_MINUTE", "-1"),
        ("MAX_ATTEMPTS", "0"),
        ("WORKERS", "many"),
        ("SERVER_THREADS", "100000"),
        ("DEMO_FAILURE_RATE", "2"),
        ("DEMO_FAILURE_RATE", "NaN"),
        ("PUBLIC_URL", "watch.example"),
        ("PUBLIC_URL", "https://watch.example/app"),
        ("TRUSTED_PROXIES", "10.0.0.1,nope"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_batchwatch"))
            .args(["user", "list"])
            .env("DATABASE_URL", &database_url)
            .env(variable, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{variable}={value}: {stderr}");
        assert!(stderr.contains(variable), "{variable}={value} is not named: {stderr}");
        assert!(!stderr.contains("panicked"), "{variable}={value}: {stderr}");
    }
    assert!(!dir.path().join("config.db").exists(), "nothing was opened");
}
