//! Where the CLI finds a local router's admin token without `--token-file`: `weir serve`,
//! when it generates its token, records the token file's absolute path under its admin
//! URL in the per-user file `$XDG_CONFIG_HOME/weir/routers.json` (else
//! `~/.config/weir/routers.json`, mode 0600). Only paths are recorded, never tokens, and
//! the CLI still needs read access to the token file itself. Entries whose token file is
//! gone are dropped at each write.

use std::collections::BTreeMap;
use std::net::SocketAddr;
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

/// The URL a local client reaches a listener bound to `addr` by: an unspecified address
/// (`0.0.0.0`, `::`) is reached on loopback.
pub fn local_url(scheme: &str, addr: SocketAddr) -> String {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("{scheme}://{addr}")
}

/// Records that the router at `url` keeps its generated admin token in `token_file`.
pub fn remember(url: &str, token_file: &Path) -> Result<(), weir_core::util::FileError> {
    let Some(file) = file() else {
        return Ok(());
    };
    let mut known = read(&file);
    known.retain(|_, token| token.exists());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_address_is_reached_on_loopback() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(local_url("http", any), "http://127.0.0.1:8080");
        let v6: SocketAddr = "[::]:9443".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(local_url("https", v6), "https://[::1]:9443");
        let bound: SocketAddr = "10.0.0.5:80".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(local_url("http", bound), "http://10.0.0.5:80");
    }
}
