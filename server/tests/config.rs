//! `Leptos.toml` (read by the deployed server) and Cargo.toml's `[[workspace.metadata.leptos]]`
//! (read by cargo-leptos) must agree on every key they share.

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
