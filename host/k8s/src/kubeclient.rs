//! kube-rs clients from kubeconfigs: one way to read a kubeconfig (its context, its
//! server, its TLS and credentials) for every Kubernetes peer weir talks to — clusters it
//! watches, the upstream it writes to, the authorization webhook.

use std::path::{Path, PathBuf};

/// Why a kubeconfig gave no client.
#[derive(Debug, thiserror::Error)]
pub enum KubeClientError {
    /// The kubeconfig could not be read or its context used.
    #[error("kubeconfig {path}")]
    Kubeconfig {
        /// The file (or where the default configuration was looked for).
        path: String,
        /// What kube-rs said.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Neither a kubeconfig nor the in-cluster service account.
    #[error("no kubeconfig given and not running in a cluster")]
    Infer(#[source] kube::config::InferConfigError),
    /// The client could not be built (TLS settings, credentials).
    #[error("kubeconfig {path}: cannot build a client")]
    Client {
        /// The file.
        path: String,
        /// What kube-rs said.
        #[source]
        source: kube::Error,
    },
}

/// The client settings of `kubeconfig` (its `context`, else the current one); without a
/// file, the in-cluster service account or the default kubeconfig, as kubectl finds them.
pub async fn load(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<kube::Config, KubeClientError> {
    let options = kube::config::KubeConfigOptions {
        context: context.map(str::to_owned),
        ..Default::default()
    };
    match kubeconfig {
        Some(path) => {
            let shown = path.display().to_string();
            let file = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                KubeClientError::Kubeconfig {
                    path: shown.clone(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|source| KubeClientError::Kubeconfig {
                    path: shown,
                    source,
                })
        }
        None if context.is_some() => {
            kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|source| KubeClientError::Kubeconfig {
                    path: "$KUBECONFIG".into(),
                    source,
                })
        }
        None => kube::Config::infer().await.map_err(KubeClientError::Infer),
    }
}

/// `config` for a kcp logical cluster: the server URL with `/clusters/<workspace>`
/// appended (kube-rs keeps a server URL's path and joins request paths to it).
pub fn in_workspace(config: &kube::Config, workspace: &str) -> kube::Config {
    let mut config = config.clone();
    let url = &config.cluster_url;
    let base = url.path().trim_end_matches('/');
    let mut parts = axum::http::uri::Builder::new();
    if let Some(scheme) = url.scheme() {
        parts = parts.scheme(scheme.clone());
    }
    if let Some(authority) = url.authority() {
        parts = parts.authority(authority.clone());
    }
    if let Ok(uri) = parts
        .path_and_query(format!("{base}/clusters/{workspace}"))
        .build()
    {
        config.cluster_url = uri;
    }
    config
}

/// A client for `config`; `path` names the kubeconfig in errors. Needs a tokio runtime.
pub fn client(
    config: kube::Config,
    path: Option<&PathBuf>,
) -> Result<kube::Client, KubeClientError> {
    kube::Client::try_from(config).map_err(|source| KubeClientError::Client {
        path: path.map_or_else(|| "(inferred)".into(), |p| p.display().to_string()),
        source,
    })
}

/// Whether `name` can be a kcp workspace (logical cluster) path: `root:org:team` — lower
/// case letters, digits, `-` and `:` separators, at most 253 bytes; so a name from an
/// event can never change the request path beyond its own segment.
pub fn valid_workspace(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b':')
        && !name.starts_with([':', '-'])
        && !name.ends_with([':', '-'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspaces_are_path_segments_under_the_server_url() {
        let config = kube::Config::new("https://kcp.example:6443/base/".parse().unwrap());
        let ws = in_workspace(&config, "root:org:team");
        assert_eq!(
            ws.cluster_url.to_string(),
            "https://kcp.example:6443/base/clusters/root:org:team"
        );
        assert!(valid_workspace("root:org:team-1"));
        for bad in ["", "Root", "a/b", "a?b", "../x", ":a", "a:", "a b", "a%2f"] {
            assert!(!valid_workspace(bad), "{bad}");
        }
    }
}
