//! Builds the LD_PRELOAD stand-in for user_events registration (`preload/ue_preload.c`) as a
//! shared library in OUT_DIR, and hands its path to the crate as `UE_BENCH_PRELOAD`.
//!
//! A shared library is not something `cc::Build::compile` makes (it archives), so this asks
//! `cc` for the configured C compiler and links the library with it directly.

use std::env;
use std::path::PathBuf;

fn main() {
    let source = "preload/ue_preload.c";
    println!("cargo::rerun-if-changed={source}");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let library = out_dir.join("libue_preload.so");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        // user_events exist only on Linux; the benchmark refuses to run without the library.
        println!("cargo::rustc-env=UE_BENCH_PRELOAD=");
        return;
    }
    let compiler = cc::Build::new()
        .opt_level(2)
        .pic(true)
        .cargo_metadata(false)
        .get_compiler();
    let status = compiler
        .to_command()
        .args(["-shared", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&library)
        .arg(source)
        .args(["-ldl", "-lpthread"])
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {:?}: {e}", compiler.path()));
    assert!(status.success(), "building {source} failed: {status}");
    println!("cargo::rustc-env=UE_BENCH_PRELOAD={}", library.display());
}
