//! The `ue-decoder` binary as a user runs it, on inputs that need no kernel.

use std::process::Command;

fn ue_decoder() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ue-decoder"))
}

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

#[test]
fn decode_prints_the_capture_as_the_golden_otlp_json_lines() {
    let out = ue_decoder()
        .args(["decode"])
        .arg(fixtures().join("examples.perf.data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let golden = std::fs::read_to_string(fixtures().join("examples.json")).unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim_end(),
        golden.trim_end()
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lost 0"), "{err}");
}

#[test]
fn decode_names_a_missing_file() {
    let out = ue_decoder()
        .args(["decode", "/nonexistent/perf.data"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/perf.data"), "{err}");
}

#[test]
fn run_without_a_destination_says_what_to_give() {
    let out = ue_decoder()
        .args(["run"])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--endpoint") && err.contains("--stdout"),
        "{err}"
    );
}

#[test]
fn status_lists_every_check_and_its_verdict() {
    let out = ue_decoder().arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("kernel") && text.contains("tracefs") && text.contains("perf privileges"),
        "{text}"
    );
    let all_ok = !text.contains("MISSING");
    assert_eq!(out.status.success(), all_ok, "{text}");
}
