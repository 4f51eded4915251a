//! The guest SDK this binary carries (`build.rs` embeds it): `weir sdk DIR` unpacks it,
//! and `weir filter new` puts a copy in every scaffold, so a filter builds on any machine
//! with weir and a Rust toolchain, without weir's source tree.

use anyhow::{Context as _, Result};
use std::path::{Path, PathBuf};

/// The SDK's files, by path under the SDK directory.
const FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/sdk_files.rs"));

/// weir's own lock file: a scaffold starts from the dependency versions weir was built
/// and tested with (cargo drops the entries the filter does not use), so its build needs
/// nothing newer than what is in cargo's cache after building weir.
pub const LOCK: &str = include!(concat!(env!("OUT_DIR"), "/sdk_lock.rs"));

/// Writes the SDK into `dir` (`weir-guest/`, `weir-abi/`, `wit/`) and returns the path of
/// the `weir-guest` crate. Files already there are replaced.
pub fn unpack(dir: &Path) -> Result<PathBuf> {
    for (path, text) in FILES {
        let to = dir.join(path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&to, text).with_context(|| format!("cannot write {}", to.display()))?;
    }
    Ok(dir.join("weir-guest"))
}

/// `weir sdk DIR`.
pub fn run(dir: &Path) -> Result<std::process::ExitCode> {
    let guest = unpack(dir)?;
    println!(
        "unpacked the weir guest SDK {} into {}",
        env!("CARGO_PKG_VERSION"),
        dir.display()
    );
    println!(
        "  in a filter's Cargo.toml: weir-guest = {{ path = \"{}\" }}",
        guest.display()
    );
    Ok(std::process::ExitCode::SUCCESS)
}
