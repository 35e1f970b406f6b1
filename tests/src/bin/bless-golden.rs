//! Rewrites golden OTLP/JSON files from their captures, after a capture was recorded anew
//! (`scripts/make-fixture.sh` calls it): `bless-golden examples logs eventheader` writes
//! `tests/fixtures/<name>.json` from `tests/fixtures/<name>.perf.data`. The tests only ever
//! compare against these files.

use std::path::Path;

fn main() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let names: Vec<String> = std::env::args().skip(1).collect();
    if names.is_empty() {
        eprintln!("usage: bless-golden NAME... (examples, logs, eventheader)");
        std::process::exit(2);
    }
    for name in names {
        let capture = fixtures.join(format!("{name}.perf.data"));
        let golden = fixtures.join(format!("{name}.json"));
        std::fs::write(&golden, tests::otlp::golden_json(&capture))
            .unwrap_or_else(|e| panic!("writing {}: {e}", golden.display()));
        eprintln!("wrote {}", golden.display());
    }
}
