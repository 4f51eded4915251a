//! Embeds the guest SDK in the binary, so `weir filter new` and `weir sdk` write a copy
//! that builds anywhere: the sources of `weir-guest` and `weir-abi`, the WIT world, and
//! manifests whose workspace-inherited fields and dependencies are spelled out (read
//! from the crates' own manifests and this workspace's `[workspace.dependencies]`, so the
//! copy builds against what the router was built and tested with).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The SDK's crates: their directory here, their name, and their description.
const CRATES: [(&str, &str); 2] = [("guest-sdk", "weir-guest"), ("abi", "weir-abi")];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest_dir.join("../..");
    let workspace =
        std::fs::read_to_string(root.join("Cargo.toml")).expect("the workspace manifest");
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.toml").display()
    );
    let version = std::env::var("CARGO_PKG_VERSION").expect("cargo sets it");
    let mut files = String::from("&[\n");
    let mut add = |path: String, text_or_file: Result<&str, &Path>| {
        match text_or_file {
            Ok(text) => writeln!(files, "    ({path:?}, {text:?}),"),
            Err(file) => writeln!(files, "    ({path:?}, include_str!({file:?})),"),
        }
        .expect("writing to a String");
    };
    for (dir, into, ext) in [
        ("guest-sdk/src", "weir-guest/src", "rs"),
        ("abi/src", "weir-abi/src", "rs"),
        ("wit", "wit", "wit"),
    ] {
        let from = root.join(dir);
        println!("cargo:rerun-if-changed={}", from.display());
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&from).unwrap_or_else(|e| panic!("{}: {e}", from.display()))
        {
            let path = entry.expect("a directory entry").path();
            // The copy holds exactly these files: anything else would be left out
            // silently, so it stops the build until this list learns about it.
            assert!(
                path.is_file() && path.extension().is_some_and(|e| e == ext),
                "{} is not a .{ext} file: teach host/weir/build.rs to embed it",
                path.display()
            );
            names.push(
                path.file_name()
                    .expect("a name")
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        names.sort();
        for name in names {
            let path = from.join(&name).canonicalize().expect("the file exists");
            add(format!("{into}/{name}"), Err(&path));
        }
    }
    for (dir, name) in CRATES {
        let path = root.join(dir).join("Cargo.toml");
        println!("cargo:rerun-if-changed={}", path.display());
        let own = std::fs::read_to_string(&path).expect("the crate's manifest");
        add(
            format!("{name}/Cargo.toml"),
            Ok(&manifest(&own, &workspace, &version)),
        );
    }
    files.push(']');
    let lock = root
        .join("Cargo.lock")
        .canonicalize()
        .expect("the workspace lock file");
    println!("cargo:rerun-if-changed={}", lock.display());
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    std::fs::write(out.join("sdk_files.rs"), files).expect("writing the SDK file list");
    std::fs::write(out.join("sdk_lock.rs"), format!("include_str!({lock:?})"))
        .expect("writing the lock file include");
}

/// A crate's manifest standing on its own: `[package]` with the inherited fields spelled
/// out, and each `[dependencies]` entry taken from the workspace (the SDK's own crates by
/// path, beside it).
fn manifest(own: &str, workspace: &str, version: &str) -> String {
    let field = |name: &str| -> String {
        own.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} = ")))
            .unwrap_or_else(|| panic!("the manifest has no {name}"))
            .to_owned()
    };
    let mut out = format!(
        "[package]\nname = {}\ndescription = {}\nversion = \"{version}\"\nedition = \"2021\"\nlicense = \"Apache-2.0\"\n\n[dependencies]\n",
        field("name"),
        field("description"),
    );
    let mut in_dependencies = false;
    for line in own.lines().map(str::trim) {
        if line.starts_with('[') {
            in_dependencies = line == "[dependencies]";
            continue;
        }
        if !in_dependencies || line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (dep, spec) = line.split_once('=').expect("`name = spec`");
        let dep = dep.trim().trim_end_matches(".workspace");
        assert!(
            spec.contains("workspace = true") || spec.trim() == "true",
            "the SDK's dependency `{dep}` must come from the workspace"
        );
        let entry = match CRATES.iter().find(|(_, name)| *name == dep) {
            Some((_, name)) => format!("{name} = {{ path = \"../{name}\" }}"),
            None => workspace
                .lines()
                .find(|l| l.starts_with(&format!("{dep} = ")))
                .unwrap_or_else(|| panic!("{dep} is not in [workspace.dependencies]"))
                .to_owned(),
        };
        writeln!(out, "{entry}").expect("writing to a String");
    }
    out
}
