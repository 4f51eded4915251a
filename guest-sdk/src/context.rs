//! What the host tells a filter about a batch.

/// The batch's tenant, route, source and caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// The tenant the events belong to.
    pub tenant: String,
    /// The route they travel on.
    pub route: String,
    /// The kind of source: "http", "grpc", "kafka", "k8s" (Events API), "k8s-watch"
    /// (cluster watch), "replay", "tick", "admin" (dry run), "cli" (`weir filter test`).
    /// Kubernetes Events carry `subject` = the involved object (`kind/namespace/name`)
    /// and the `k8s*` extensions (see `wit/filter.wit`).
    pub source_kind: String,
    /// The authenticated caller, when the source authenticates.
    pub principal: Option<Principal>,
}

/// An authenticated caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Principal {
    /// User name.
    pub user: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Extra attributes with their values.
    pub extra: Vec<(String, Vec<String>)>,
}

impl Principal {
    /// The values of one extra attribute (empty when absent).
    pub fn extra(&self, key: &str) -> &[String] {
        self.extra
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
            .unwrap_or(&[])
    }

    /// The first value of one extra attribute.
    pub fn extra_first(&self, key: &str) -> Option<&str> {
        self.extra(key).first().map(String::as_str)
    }
}
