//! The admin API on its own TLS listener: client certificates (generated with rcgen)
//! mapped to roles, bearer tokens still accepted, untrusted certificates refused, and the
//! ingest listener no longer serving admin paths.

#![allow(clippy::unwrap_used)]

mod common;

use common::pki::Pki;
use common::*;

fn client(ca_pem: &str, identity: Option<&(String, String)>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap());
    if let Some((cert, key)) = identity {
        b = b.identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
    }
    b.build().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn client_certificates_map_to_roles_on_a_separate_tls_admin_listener() {
    let pki = Pki::new("weir test CA");
    let other = Pki::new("someone else's CA");
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (server_cert, server_key) = pki.issue("weir", &["localhost", "127.0.0.1"]);
    let ca = write("ca.pem", &pki.ca_pem);
    let cert = write("server.pem", &server_cert);
    let key = write("server.key", &server_key);
    let token = "bearer-still-works";
    let config = [
        "tenants:".to_owned(),
        "  acme: {}".to_owned(),
        "admin:".to_owned(),
        "  listen: 127.0.0.1:0".to_owned(),
        format!("  tls: {{ cert: {cert}, key: {key}, client_ca: {ca} }}"),
        "  client_certs:".to_owned(),
        "    - { common_name: ops, role: admin }".to_owned(),
        "    - { common_name: acme-ci, role: \"tenant:acme\" }".to_owned(),
        "  tokens:".to_owned(),
        format!(
            "    - {{ name: ci, sha256: {}, role: admin }}",
            weir::tokens::hash_token(token)
        ),
        "filters:".to_owned(),
        format!(
            "  stamp: {{ path: {}, config: {{ stamp: v1 }} }}",
            wasm::STAMP
        ),
        "routes:".to_owned(),
        "  - { name: main, filters: [stamp], to: [tail] }".to_owned(),
    ]
    .join("\n");
    let weir = Weir::start_in(dir, &config);
    let admin = weir.admin_url().expect("admin listener announced");
    assert!(admin.starts_with("https://"), "{admin}");
    let admin = admin.replace("127.0.0.1", "localhost");

    let ops = pki.issue("ops", &[]);
    let acme = pki.issue("acme-ci", &[]);
    let stranger = pki.issue("stranger", &[]);
    let forged = other.issue("ops", &[]);

    // The ingest listener no longer serves the admin API.
    let resp = reqwest::get(format!("{}/v1/filters", weir.url))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);

    let get = |c: reqwest::Client, path: &str| {
        let url = format!("{admin}{path}");
        async move { c.get(url).send().await }
    };
    let resp = get(client(&pki.ca_pem, Some(&ops)), "/v1/filters")
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["filters"][0]["name"], "stamp");

    let resp = get(client(&pki.ca_pem, Some(&acme)), "/v1/filters/stamp")
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        403,
        "acme's certificate is a tenant role"
    );
    let resp = client(&pki.ca_pem, Some(&acme))
        .put(format!("{admin}/v1/filters/acme-stamp"))
        .header("x-weir-filter-config", r#"{"stamp":"a"}"#)
        .body(std::fs::read(wasm::STAMP).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);

    let resp = get(client(&pki.ca_pem, Some(&stranger)), "/v1/filters")
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        401,
        "a verified but unmapped certificate has no role"
    );
    let resp = get(client(&pki.ca_pem, None), "/v1/filters").await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = client(&pki.ca_pem, None)
        .get(format!("{admin}/v1/filters"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "tokens work over TLS too");

    let forged = get(client(&pki.ca_pem, Some(&forged)), "/v1/filters").await;
    assert!(
        forged.is_err(),
        "a certificate from another CA fails the handshake"
    );

    // The CLI reaches the TLS admin listener with a CA and a client certificate, from
    // flags or from the environment, and needs no token then.
    let files = tempfile::tempdir().unwrap();
    let put = |name: &str, text: &str| {
        let path = files.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (ca, ops_cert, ops_key) = (
        put("ca.pem", &pki.ca_pem),
        put("ops.pem", &ops.0),
        put("ops.key", &ops.1),
    );
    let cli = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = std::process::Command::new(weir_bin());
        c.args(args)
            .current_dir(files.path())
            .env_remove("WEIR_TOKEN")
            .env_remove("WEIR_CA")
            .env_remove("WEIR_CLIENT_CERT")
            .env_remove("WEIR_CLIENT_KEY");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let out = cli(
        &[
            "filter", "list", "--url", &admin, "--ca", &ca, "--cert", &ops_cert, "--key", &ops_key,
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("stamp"));
    let out = cli(
        &["tenant", "list", "--url", &admin],
        &[
            ("WEIR_CA", &ca),
            ("WEIR_CLIENT_CERT", &ops_cert),
            ("WEIR_CLIENT_KEY", &ops_key),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("acme"));
    // Without the CA, nothing would trust the router's certificate: refused up front.
    let out = cli(
        &[
            "filter", "list", "--url", &admin, "--cert", &ops_cert, "--key", &ops_key,
        ],
        &[],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--cert and --key need --ca"), "{stderr}");
}
