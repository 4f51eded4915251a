//! A throwaway certificate authority (rcgen) issuing server and client certificates.

use rcgen::{CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair};

/// A CA and its signing key.
pub struct Pki {
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Pki {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// (certificate PEM, key PEM)
    pub fn issue(&self, cn: &str, sans: &[&str]) -> (String, String) {
        self.issue_with(cn, &["weir-tests"], sans)
    }

    /// (certificate PEM, key PEM) with these subject organisations (a user's groups).
    pub fn issue_with(&self, cn: &str, orgs: &[&str], sans: &[&str]) -> (String, String) {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        for o in orgs {
            dn.push(DnType::OrganizationName, *o);
        }
        params.distinguished_name = dn;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// An HTTPS client trusting this CA (the servers'), presenting a certificate `users`
    /// issues for `cn` in `groups`, when given.
    pub fn https_client(&self, identity: Option<(&Pki, &str, &[&str])>) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap();
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(ca);
        if let Some((users, cn, groups)) = identity {
            let (cert, key) = users.issue_with(cn, groups, &[]);
            let pem = format!("{cert}{key}");
            builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        builder.build().unwrap()
    }
}
