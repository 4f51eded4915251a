//! Builds the guest components the end-to-end tests load, and hands their paths to the
//! tests as compile-time constants (a missing fixture fails the build, not a test).
//!
//! The guests are built by a nested `cargo build --target wasm32-wasip2 --release` into a
//! separate target directory, so the outer build's lock is never contended.

use std::path::PathBuf;
use std::process::Command;

const GUESTS: [(&str, &str); 12] = [
    ("k8s-correlate", "k8s_correlate"),
    ("k8s-filter", "k8s_filter"),
    ("k8s-transform", "k8s_transform"),
    ("trigger-route", "trigger_route"),
    ("dedup", "dedup"),
    ("rate-limit", "rate_limit"),
    ("severity", "severity"),
    ("scope-inject", "scope_inject"),
    ("redact", "redact"),
    ("hostile", "hostile"),
    ("stamp", "stamp"),
    ("other-world", "other_world"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("tests/ is inside the workspace")
        .to_owned();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .map(|t| t.join("guests"))
        .unwrap_or_else(|| out_dir.join("guests"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    for (package, _) in GUESTS {
        cmd.args(["-p", package]);
    }
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    // Under cargo-llvm-cov (scripts/coverage) rustc runs through its wrapper, which would
    // instrument the guests too: wasm32 has no profiler runtime.
    if std::env::var_os("__CARGO_LLVM_COV_RUSTC_WRAPPER").is_some() {
        cmd.env_remove("RUSTC_WRAPPER");
    }
    let status = cmd
        .status()
        .expect("cannot run cargo to build the guest components");
    assert!(
        status.success(),
        "building the guest components failed; is the target installed? `rustup target add wasm32-wasip2`"
    );
    for (_, lib) in GUESTS {
        let path = target_dir
            .join("wasm32-wasip2/release")
            .join(format!("{lib}.wasm"));
        assert!(path.exists(), "{} was not built", path.display());
        println!(
            "cargo:rustc-env=WEIR_WASM_{}={}",
            lib.to_ascii_uppercase(),
            path.display()
        );
    }
    for dir in ["abi", "guest-sdk", "wit", "filters", "tests/guests"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
}
