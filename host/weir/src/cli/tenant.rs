//! `weir tenant set|get|list|rm`: a tenant's limits and filter chains on a running router.

use super::filter::AdminArgs;
use anyhow::{bail, Context as _, Result};
use clap::Subcommand;
use std::process::ExitCode;

/// Tenant commands.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create or change a tenant: its chain on routes and (admins only) its limits.
    /// Example: `weir tenant set acme --route main=severity,redact --limits '{"timeout_ms": 50}'`
    Set {
        /// The tenant.
        name: String,
        /// `ROUTE=FILTER,FILTER...` (repeatable; `ROUTE=` for an empty chain).
        #[arg(long = "route")]
        routes: Vec<String>,
        /// Limits as JSON: timeout_ms, memory_mb, output_mb, state_mb.
        #[arg(long)]
        limits: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show a tenant.
    Get {
        /// The tenant.
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List the tenants the token may see.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Remove a tenant set through the API.
    Rm {
        /// The tenant.
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Runs a tenant command.
pub fn run(cmd: TenantCommand) -> Result<ExitCode> {
    let (request, admin) = match cmd {
        TenantCommand::Set {
            name,
            routes,
            limits,
            admin,
        } => {
            let mut body = serde_json::Map::new();
            if !routes.is_empty() {
                let mut map = serde_json::Map::new();
                for r in &routes {
                    let Some((route, chain)) = r.split_once('=') else {
                        bail!("--route {r}: expected ROUTE=FILTER,FILTER...");
                    };
                    let chain: Vec<&str> = chain.split(',').filter(|f| !f.is_empty()).collect();
                    map.insert(route.to_owned(), serde_json::json!(chain));
                }
                body.insert("routes".into(), map.into());
            }
            if let Some(limits) = limits {
                let v: serde_json::Value =
                    serde_json::from_str(&limits).context("--limits must be JSON")?;
                body.insert("limits".into(), v);
            }
            let req = admin
                .client()?
                .put(admin.url(&format!("/v1/tenants/{name}")))
                .body(serde_json::Value::Object(body).to_string());
            (req, admin)
        }
        TenantCommand::Get { name, admin } => (
            admin
                .client()?
                .get(admin.url(&format!("/v1/tenants/{name}"))),
            admin,
        ),
        TenantCommand::List { admin } => (admin.client()?.get(admin.url("/v1/tenants")), admin),
        TenantCommand::Rm { name, admin } => (
            admin
                .client()?
                .delete(admin.url(&format!("/v1/tenants/{name}"))),
            admin,
        ),
    };
    admin.call(request)
}
