//! The vendored generated files also test a `with-schemars` feature, which this crate
//! does not offer; declare it so that the compiler does not warn about it.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(feature, values(\"with-schemars\"))");
}
