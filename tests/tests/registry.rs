//! The filter registry driven directly (no HTTP): versions, activation, rollback, removal,
//! refusals that change nothing, seeding from the configuration, and what survives a
//! restart. Real components built from `filters/` for this test run.

#![allow(clippy::unwrap_used)]

mod common;

use common::wasm;
use std::path::Path;
use std::sync::Arc;
use weir::runtime::registry::{FilterRegistry, RegistryError, Upload};
use weir::runtime::{EngineOptions, FilterEngine, FilterMetrics};
use weir_core::metrics::MetricsRegistry;

fn open(dir: &Path) -> FilterRegistry {
    let options = EngineOptions {
        cache_dir: Some(dir.join("cache")),
        ..EngineOptions::default()
    };
    let engine = Arc::new(FilterEngine::new(options).unwrap());
    let metrics = Arc::new(FilterMetrics::new(&MetricsRegistry::new()));
    FilterRegistry::open(engine, dir, 8 << 20, metrics).unwrap()
}

fn upload<'a>(component: &'a [u8], config: &'a str) -> Upload<'a> {
    Upload {
        component,
        config,
        owner: None,
        by: "test",
    }
}

#[test]
fn versions_count_up_and_rollback_moves_only_the_active_pointer() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path());
    let severity = std::fs::read(wasm::SEVERITY).unwrap();
    let redact = std::fs::read(wasm::REDACT).unwrap();

    let v1 = reg
        .upload("policy", upload(&severity, r#"{"min":"info"}"#))
        .unwrap();
    let v2 = reg.upload("policy", upload(&redact, "")).unwrap();
    let v3 = reg
        .upload("policy", upload(&severity, r#"{"min":"error"}"#))
        .unwrap();
    assert_eq!((v1.version, v2.version, v3.version), (1, 2, 3));
    assert_eq!(v1.hash, v3.hash, "the same bytes hash alike");
    assert_eq!(v2.config, "{}", "an empty configuration is stored as {{}}");
    assert_eq!(reg.active("policy").unwrap().version, 3);

    // Without a target: the version before the active one.
    assert_eq!(reg.rollback("policy", None).unwrap().version, 2);
    let active = reg.active("policy").unwrap();
    assert_eq!((active.version, active.config.as_str()), (2, "{}"));
    assert_eq!(reg.rollback("policy", None).unwrap().version, 1);
    let err = reg.rollback("policy", None).unwrap_err();
    assert!(matches!(err, RegistryError::NoPrevious(_)), "{err}");
    assert_eq!(err.status(), 409);

    // A named target, also forward again; an unknown one is refused.
    assert_eq!(reg.rollback("policy", Some(3)).unwrap().version, 3);
    let err = reg.rollback("policy", Some(9)).unwrap_err();
    assert!(
        matches!(err, RegistryError::NoVersion { version: 9, .. }),
        "{err}"
    );
    assert_eq!(reg.active("policy").unwrap().version, 3);
    let record = reg.record("policy").unwrap();
    assert_eq!(record.versions.len(), 3, "rollback keeps every version");

    // A new upload after a rollback numbers after the highest version.
    reg.rollback("policy", Some(1)).unwrap();
    assert_eq!(
        reg.upload("policy", upload(&redact, "")).unwrap().version,
        4
    );
}

#[test]
fn refused_uploads_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path());
    let severity = std::fs::read(wasm::SEVERITY).unwrap();
    reg.upload("policy", upload(&severity, r#"{"min":"info"}"#))
        .unwrap();

    let other_world = std::fs::read(wasm::OTHER_WORLD).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str, u16)> = vec![
        ("Policy", severity.clone(), "", 400),
        ("policy", severity.clone(), "{not json", 400),
        ("policy", b"\0asm\x01\0\0\0".to_vec(), "", 400),
        ("policy", b"hello".to_vec(), "", 400),
        ("policy", other_world, "", 422),
        // The severity filter's init refuses an unknown level.
        ("policy", severity.clone(), r#"{"min":"loud"}"#, 422),
    ];
    for (name, bytes, config, status) in cases {
        let err = reg.upload(name, upload(&bytes, config)).unwrap_err();
        assert_eq!(err.status(), status, "{name} {config}: {err}");
    }
    let big = vec![0u8; (8 << 20) + 1];
    assert_eq!(
        reg.upload("policy", upload(&big, "")).unwrap_err().status(),
        413
    );

    let record = reg.record("policy").unwrap();
    assert_eq!(record.versions.len(), 1);
    assert_eq!(reg.active("policy").unwrap().version, 1);
    assert_eq!(reg.list().len(), 1, "no record for a refused new name");
}

#[test]
fn state_survives_a_restart_and_removal_forgets_the_filter() {
    let dir = tempfile::tempdir().unwrap();
    let severity = std::fs::read(wasm::SEVERITY).unwrap();
    let redact = std::fs::read(wasm::REDACT).unwrap();
    {
        let reg = open(dir.path());
        reg.upload(
            "mine",
            Upload {
                component: &severity,
                config: r#"{"min":"warning"}"#,
                owner: Some("acme"),
                by: "tenant:acme",
            },
        )
        .unwrap();
        reg.upload("mine", upload(&redact, "")).unwrap();
        reg.rollback("mine", Some(1)).unwrap();
        reg.upload("gone", upload(&redact, "")).unwrap();
        reg.remove("gone").unwrap();
        let err = reg.remove("gone").unwrap_err();
        assert_eq!(err.status(), 404, "{err}");
    }
    let reg = open(dir.path());
    let record = reg.record("mine").unwrap();
    assert_eq!(record.owner.as_deref(), Some("acme"));
    assert_eq!(record.versions[0].uploaded_by, "tenant:acme");
    let active = reg.active("mine").unwrap();
    assert_eq!(
        (active.version, active.config.as_str()),
        (1, r#"{"min":"warning"}"#),
        "the rolled-back version is what a restart activates"
    );
    assert!(reg.record("gone").is_none() && reg.active("gone").is_none());
}

#[test]
fn seeding_from_the_config_adds_a_version_only_when_something_changed() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path());
    let path = Path::new(wasm::SEVERITY);
    assert_eq!(reg.seed("sev", path, r#"{"min":"info"}"#).unwrap(), 1);
    assert_eq!(reg.seed("sev", path, r#"{"min":"info"}"#).unwrap(), 1);
    assert_eq!(reg.seed("sev", path, r#"{"min":"warning"}"#).unwrap(), 2);
    let record = reg.record("sev").unwrap();
    assert_eq!(record.owner, None, "config filters belong to the platform");
    assert_eq!(record.versions[1].uploaded_by, "config");
    let err = reg
        .seed("sev", Path::new("/nonexistent/filter.wasm"), "")
        .unwrap_err();
    assert_eq!(err.status(), 500, "{err}");
    assert_eq!(reg.active("sev").unwrap().version, 2);
}

#[test]
fn only_the_newest_versions_are_kept_and_dropped_components_are_collected() {
    use weir::runtime::registry::MAX_VERSIONS;
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path());
    let severity = std::fs::read(wasm::SEVERITY).unwrap();
    let redact = std::fs::read(wasm::REDACT).unwrap();
    // The first version is redact (a component no later version uses), then severity
    // with ever new configurations.
    reg.upload("policy", upload(&redact, "{}")).unwrap();
    let cache = dir.path().join("cache");
    let entries = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(entries(&cache).len(), 1, "redact was compiled and cached");
    // Left behind by an older engine build, and by a write that died an hour ago.
    std::fs::write(cache.join("feed-0000000000000000.cwasm"), b"old").unwrap();
    let dead = cache.join("feed-0000000000000000.tmp-1-0");
    std::fs::write(&dead, b"partial").unwrap();
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&dead)
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();
    for i in 0..MAX_VERSIONS + 5 {
        let config = format!(
            r#"{{"min":"info","unknown":"{}"}}"#,
            if i % 2 == 0 { "keep" } else { "drop" }
        );
        reg.upload("policy", upload(&severity, &config)).unwrap();
    }
    let record = reg.record("policy").unwrap();
    assert_eq!(record.versions.len(), MAX_VERSIONS);
    assert_eq!(
        record.versions.last().map(|v| v.version),
        Some((MAX_VERSIONS + 6) as u32)
    );
    assert!(matches!(
        reg.rollback("policy", Some(1)),
        Err(RegistryError::NoVersion { .. })
    ));
    // Only severity's component is left on disk, stored and compiled.
    let blobs = std::fs::read_dir(dir.path().join("filters").join("blobs"))
        .unwrap()
        .count();
    assert_eq!(blobs, 1);
    let severity_hash = weir::runtime::content_hash(&severity);
    let cached = entries(&cache);
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(cached[0].starts_with(&severity_hash), "{cached:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(cache.join(&cached[0]))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "compiled code is the owner's only");
    }
}
