//! Embeds the guest SDK in the binary, so `weir filter new` and `weir sdk` write a copy
//! that builds anywhere: the sources of `weir-guest` and `weir-abi`, the WIT world, and
//! manifests whose workspace-inherited fields and dependencies are spelled out (the
//! versions come from this workspace's `[workspace.dependencies]`, so the copy builds
//! against what the router was built and tested with).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest_dir.join("../..");
    let mut files = String::from("&[\n");
    for (dir, into) in [
        ("guest-sdk/src", "weir-guest/src"),
        ("abi/src", "weir-abi/src"),
        ("wit", "wit"),
    ] {
        let from = root.join(dir);
        println!("cargo:rerun-if-changed={}", from.display());
        let mut names: Vec<String> = std::fs::read_dir(&from)
            .unwrap_or_else(|e| panic!("reading {}: {e}", from.display()))
            .map(|entry| {
                entry
                    .expect("a directory entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| n.ends_with(".rs") || n.ends_with(".wit"))
            .collect();
        names.sort();
        for name in names {
            let path = from.join(&name).canonicalize().expect("the file exists");
            writeln!(
                files,
                "    ({:?}, include_str!({:?})),",
                format!("{into}/{name}"),
                path
            )
            .expect("writing to a String");
        }
    }
    let workspace =
        std::fs::read_to_string(root.join("Cargo.toml")).expect("the workspace manifest");
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.toml").display()
    );
    let dependency = |name: &str| -> String {
        workspace
            .lines()
            .find(|l| l.starts_with(&format!("{name} = ")))
            .unwrap_or_else(|| panic!("{name} is not in [workspace.dependencies]"))
            .to_owned()
    };
    let version = std::env::var("CARGO_PKG_VERSION").expect("cargo sets it");
    let package = |name: &str, description: &str| {
        format!(
            "[package]\nname = \"{name}\"\ndescription = \"{description}\"\nversion = \"{version}\"\nedition = \"2021\"\nlicense = \"Apache-2.0\"\n\n[dependencies]\n"
        )
    };
    let guest = package(
        "weir-guest",
        "Write weir filters as plain Rust functions; this crate hides the WebAssembly boundary.",
    ) + "weir-abi = { path = \"../weir-abi\" }\n"
        + &[
            dependency("wit-bindgen"),
            dependency("serde"),
            dependency("serde_json"),
        ]
        .join("\n")
        + "\n";
    let abi = package(
        "weir-abi",
        "The packed batch layout shared by the weir host and the weir guest SDK (version 1).",
    ) + &dependency("thiserror")
        + "\n";
    writeln!(files, "    (\"weir-guest/Cargo.toml\", {guest:?}),").expect("writing to a String");
    writeln!(files, "    (\"weir-abi/Cargo.toml\", {abi:?}),").expect("writing to a String");
    files.push(']');
    let lock = root
        .join("Cargo.lock")
        .canonicalize()
        .expect("the workspace lock file");
    println!("cargo:rerun-if-changed={}", lock.display());
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    std::fs::write(out.join("sdk_files.rs"), files).expect("writing the SDK file list");
    std::fs::write(
        out.join("sdk_lock.rs"),
        format!("include_str!({:?})", Path::new(&lock)),
    )
    .expect("writing the lock file include");
}
