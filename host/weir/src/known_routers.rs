//! Where the CLI finds a local router's admin token without `--token-file`: a router that
//! generates its token records the token file's absolute path under its admin URL in the
//! per-user file `$XDG_CONFIG_HOME/weir/routers.json` (else `~/.config/weir/routers.json`,
//! mode 0600). Only paths are recorded, never tokens, and the CLI still needs read access
//! to the token file itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The per-user file, when a home or config directory is known.
pub fn file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")))?;
    Some(base.join("weir").join("routers.json"))
}

fn read(file: &Path) -> BTreeMap<String, PathBuf> {
    std::fs::read(file)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// The normal form of a router URL as a key (`http://127.0.0.1:8080`).
fn key(url: &str) -> String {
    url.trim_end_matches('/').to_ascii_lowercase()
}

/// Records that the router at `url` keeps its generated admin token in `token_file`.
pub fn remember(url: &str, token_file: &Path) -> Result<(), weir_core::util::FileError> {
    let Some(file) = file() else {
        return Ok(());
    };
    let mut known = read(&file);
    let token_file = token_file
        .canonicalize()
        .unwrap_or_else(|_| token_file.to_owned());
    known.insert(key(url), token_file);
    if let Some(dir) = file.parent() {
        // A failure here surfaces as the write's error below.
        let _ = std::fs::create_dir_all(dir);
    }
    let text = serde_json::to_vec_pretty(&known).unwrap_or_default();
    weir_core::util::write_atomically(&file, &text)
}

/// The token file recorded for the router at `url`.
pub fn token_file(url: &str) -> Option<PathBuf> {
    read(&file()?).remove(&key(url))
}
