//! The router's decisions without wasm: which routes take an event, which tenant it is
//! charged to, rate limits, and what a sink's failure does to each event. Routes here have
//! empty filter chains, so only the router's own logic runs.

use super::*;
use crate::settings::{RouteConfig, SourceMapping, TenancyConfig, TenantConfig};
use std::sync::Mutex;
use weir_core::metrics::MetricsRegistry;
use weir_runtime::{EngineOptions, FilterEngine};

/// A sink keeping what it is given; `fail` decides a write's failure from its events.
#[derive(Default)]
struct Capture {
    events: Mutex<Vec<String>>,
    /// (tenant, stage, reason, event id) of each dead letter.
    letters: Mutex<Vec<(String, String, String, String)>>,
    fail: Option<fn(&[&Event]) -> SinkError>,
}

impl Sink for Capture {
    fn write(&self, events: &[&Event]) -> Result<(), SinkError> {
        let failure = self.fail.map(|f| f(events));
        let failed: Vec<usize> = match &failure {
            Some(SinkError::Partial { failed, .. }) => failed.clone(),
            Some(_) => (0..events.len()).collect(),
            None => Vec::new(),
        };
        let mut kept = self.events.lock().expect("lock");
        for (i, e) in events.iter().enumerate() {
            if !failed.contains(&i) {
                kept.push(e.id.clone());
            }
        }
        failure.map_or(Ok(()), Err)
    }

    fn write_dead_letters(&self, letters: &[DeadLetter<'_>]) -> Result<(), SinkError> {
        let mut kept = self.letters.lock().expect("lock");
        for l in letters {
            let id = l.event.map(|e| e.id.clone()).unwrap_or_default();
            kept.push((l.tenant.into(), l.stage.into(), l.reason.into(), id));
        }
        Ok(())
    }
}

struct Setup {
    router: Router,
    sinks: BTreeMap<String, Arc<Capture>>,
    _dir: tempfile::TempDir,
}

fn start(
    routes: &str,
    tenants: &str,
    tenancy: TenancyConfig,
    sinks: Vec<(&str, Capture)>,
) -> Setup {
    let routes: Vec<RouteConfig> = serde_norway::from_str(routes).expect("routes");
    let tenants: BTreeMap<String, TenantConfig> = serde_norway::from_str(tenants).expect("tenants");
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = Arc::new(Metrics::new(Arc::new(MetricsRegistry::new())));
    let engine = Arc::new(FilterEngine::new(EngineOptions::default()).expect("engine"));
    let registry = Arc::new(
        FilterRegistry::open(engine, dir.path(), 1 << 20, metrics.filters.clone())
            .expect("registry"),
    );
    let directory =
        Arc::new(TenantDirectory::open(&tenants, &routes, dir.path()).expect("tenants"));
    let captures: BTreeMap<String, Arc<Capture>> = sinks
        .into_iter()
        .map(|(name, c)| (name.to_owned(), Arc::new(c)))
        .collect();
    let as_sinks: BTreeMap<String, Arc<dyn Sink>> = captures
        .iter()
        .map(|(n, c)| (n.clone(), c.clone() as Arc<dyn Sink>))
        .collect();
    let router = Router::start(
        &routes,
        &tenancy,
        &BTreeMap::new(),
        registry,
        directory,
        as_sinks,
        metrics,
        Arc::new(StateStore::in_memory()),
    )
    .expect("router");
    Setup {
        router,
        sinks: captures,
        _dir: dir,
    }
}

fn ev(id: &str, source: &str, ty: &str, tenant: Option<&str>) -> Event {
    let mut e = Event::new(id, source, ty);
    if let Some(t) = tenant {
        e.set_extension("tenant", t);
    }
    e
}

fn origin(source_kind: &'static str) -> Origin<'static> {
    Origin {
        source_kind,
        ..Origin::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_take_events_by_source_kind_and_condition() {
    let s = start(
        "- name: a\n  when: [{ exact: { type: keep } }]\n  to: [one]\n\
         - name: b\n  from: [grpc]\n  to: [two]\n",
        "default: {}\n",
        TenancyConfig::default(),
        vec![("one", Capture::default()), ("two", Capture::default())],
    );
    let outcome = s
        .router
        .submit_to(
            origin("http"),
            vec![ev("1", "/s", "keep", None), ev("2", "/s", "other", None)],
        )
        .await
        .expect("taken");
    assert_eq!((outcome.delivered, outcome.skipped), (1, 1));
    assert_eq!(*s.sinks["one"].events.lock().expect("lock"), ["1"]);
    assert!(s.sinks["two"].events.lock().expect("lock").is_empty());

    // A route the source does not feed is unknown to it; a replay reaches it.
    let to_b = Origin {
        route: Some("b"),
        ..origin("http")
    };
    let refused = s
        .router
        .submit_to(to_b, vec![ev("3", "/s", "t", None)])
        .await;
    assert!(matches!(refused, Err(RouterError::UnknownRoute(r)) if r == "b"));
    let replay = Origin {
        route: Some("b"),
        ..origin(REPLAY_SOURCE)
    };
    let outcome = s
        .router
        .submit_to(replay, vec![ev("4", "/s", "t", None)])
        .await
        .expect("replayed");
    assert_eq!(outcome.delivered, 1);
    assert_eq!(*s.sinks["two"].events.lock().expect("lock"), ["4"]);
    s.router.shutdown();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tenant_is_the_mapping_then_the_extension_then_the_hint_else_default() {
    fn refuse(_: &[&Event]) -> SinkError {
        SinkError::Refused {
            sink: "broken".into(),
            reason: "no".into(),
        }
    }
    let tenancy = TenancyConfig {
        sources: vec![SourceMapping {
            prefix: "/acme".into(),
            tenant: "acme".into(),
        }],
        header: None,
        producers: Vec::new(),
    };
    let s = start(
        "- name: main\n  to: [broken]\n  dead_letter: dlq\n",
        "default: {}\nacme: {}\nglobex: {}\n",
        tenancy,
        vec![
            (
                "broken",
                Capture {
                    fail: Some(refuse),
                    ..Capture::default()
                },
            ),
            ("dlq", Capture::default()),
        ],
    );
    /// (event id, source, `tenant` extension, the source's hint, the tenant expected)
    type Case = (
        &'static str,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
        &'static str,
    );
    let cases: [Case; 5] = [
        // A producer cannot claim another tenant against a source mapping.
        ("m", "/acme/x", Some("globex"), None, "acme"),
        ("e", "/other", Some("globex"), Some("acme"), "globex"),
        ("h", "/other", Some("nobody"), Some("acme"), "acme"),
        ("u", "/other", None, Some("nobody"), "default"),
        ("n", "/other", None, None, "default"),
    ];
    for (id, source, ext, hint, _) in cases {
        let o = Origin {
            tenant_hint: hint,
            ..origin("http")
        };
        let outcome = s
            .router
            .submit_to(o, vec![ev(id, source, "t", ext)])
            .await
            .expect("taken");
        assert_eq!(outcome.dead_lettered, 1, "{id}");
    }
    let letters = s.sinks["dlq"].letters.lock().expect("lock").clone();
    for (id, _, _, _, tenant) in cases {
        let letter = letters.iter().find(|l| l.3 == id).expect("a dead letter");
        assert_eq!(letter.0, tenant, "event {id}");
        assert_eq!(
            (letter.1.as_str(), letter.2.as_str()),
            ("broken", "sink `broken`: no")
        );
    }
    s.router.shutdown();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_over_its_rate_is_refused_whole_and_others_flow() {
    let s = start(
        "- name: main\n  to: [out]\n",
        "default: {}\nacme: { limits: { events_per_sec: 2 } }\n",
        TenancyConfig::default(),
        vec![("out", Capture::default())],
    );
    let acme = |id: &str| ev(id, "/s", "t", Some("acme"));
    let refused = s
        .router
        .submit_to(origin("http"), vec![acme("a1"), acme("a2"), acme("a3")])
        .await;
    match refused {
        Err(RouterError::RateLimited {
            tenant,
            limit,
            retry_after_secs,
        }) => {
            assert_eq!((tenant.as_str(), limit), ("acme", 2));
            assert!(retry_after_secs >= 1);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        s.sinks["out"].events.lock().expect("lock").is_empty(),
        "nothing taken"
    );
    let outcome = s
        .router
        .submit_to(origin("http"), vec![acme("a4"), acme("a5")])
        .await
        .expect("within the limit");
    assert_eq!(outcome.delivered, 2);
    let outcome = s
        .router
        .submit_to(origin("http"), vec![ev("d1", "/s", "t", None)])
        .await
        .expect("default is unlimited");
    assert_eq!(outcome.delivered, 1);
    s.router.shutdown();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partial_sink_failure_dead_letters_only_the_events_it_left_out() {
    fn second_fails(_: &[&Event]) -> SinkError {
        SinkError::Partial {
            sink: "flaky".into(),
            failed: vec![1],
            retry: Vec::new(),
            reason: "the broker refused it".into(),
        }
    }
    let s = start(
        "- name: main\n  to: [flaky, also]\n  dead_letter: dlq\n",
        "default: {}\n",
        TenancyConfig::default(),
        vec![
            (
                "flaky",
                Capture {
                    fail: Some(second_fails),
                    ..Capture::default()
                },
            ),
            ("also", Capture::default()),
            ("dlq", Capture::default()),
        ],
    );
    let outcome = s
        .router
        .submit_to(
            origin("http"),
            vec![
                ev("1", "/s", "t", None),
                ev("2", "/s", "t", None),
                ev("3", "/s", "t", None),
            ],
        )
        .await
        .expect("taken");
    assert_eq!((outcome.delivered, outcome.dead_lettered), (2, 1));
    assert_eq!(*s.sinks["flaky"].events.lock().expect("lock"), ["1", "3"]);
    assert_eq!(
        *s.sinks["also"].events.lock().expect("lock"),
        ["1", "2", "3"]
    );
    let letters = s.sinks["dlq"].letters.lock().expect("lock").clone();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (letters[0].1.as_str(), letters[0].3.as_str()),
        ("flaky", "2")
    );
    assert!(
        letters[0].2.contains("the broker refused it"),
        "{:?}",
        letters[0]
    );
    s.router.shutdown();
}
