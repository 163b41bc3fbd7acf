//! The sustain binaries start their code segment on a 2 MiB boundary, with
//! the padding around it unmapped, so that at start they can move their
//! whole code onto transparent huge pages (src/huge_text.rs). Only this
//! package's binaries: the library, its tests and embedders link as usual.
fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,-z,max-page-size=0x200000");
}
