//! The public PKI listener and the revocation URLs written into certificates.

use std::net::{IpAddr, SocketAddr};

use clap::Args;

use crate::error::Error;
use crate::pki::crl::StatusUrls;

#[derive(Args, Debug, Clone)]
pub struct PkiArgs {
    /// Address of the public plain-HTTP PKI listener: CRLs (/crl/...) and the OCSP responder (/ocsp).
    #[arg(long, env = "PRINCIPALD_PKI_LISTEN", default_value = "127.0.0.1:8081")]
    pub pki_listen: SocketAddr,
    /// Public base URL of the PKI listener as relying parties reach it (`BASE/crl/...`, `BASE/ocsp`), written into
    /// every certificate; default: the PKI listener's own address.
    #[arg(long, env = "PRINCIPALD_PKI_URL")]
    pub pki_url: Option<String>,
    /// Base URL of the CRLs only (`BASE/crl/...`), if they are published elsewhere than --pki-url (a CDN).
    #[arg(long, env = "PRINCIPALD_CRL_URL")]
    pub crl_url: Option<String>,
    /// URL of the OCSP responder only, if it differs from --pki-url's `BASE/ocsp`.
    #[arg(long, env = "PRINCIPALD_OCSP_URL")]
    pub ocsp_url: Option<String>,
}

/// Validated PKI listener settings.
#[derive(Clone, Debug)]
pub struct PkiConfig {
    pub listen: SocketAddr,
    pub pki_url: Option<String>,
    pub crl_url: Option<String>,
    pub ocsp_url: Option<String>,
}

impl PkiArgs {
    /// `grpc` is the gRPC listener's address: when it is reachable from other hosts, certificates must not name a
    /// loopback or wildcard address that relying parties would resolve to themselves.
    pub fn validate(&self, grpc: SocketAddr) -> Result<PkiConfig, Error> {
        let config = PkiConfig {
            listen: self.pki_listen,
            pki_url: self.pki_url.as_deref().map(|u| http_url("--pki-url", u)).transpose()?,
            crl_url: self.crl_url.as_deref().map(|u| http_url("--crl-url", u)).transpose()?,
            ocsp_url: self.ocsp_url.as_deref().map(|u| http_url("--ocsp-url", u)).transpose()?,
        };
        if !grpc.ip().is_loopback() {
            let urls = config.urls(self.pki_listen);
            for (flag, url) in [("--crl-url", &urls.crl_base), ("--ocsp-url", &urls.ocsp)] {
                if local_host(url) {
                    let which = if self.pki_url.is_none()
                        && (flag == "--crl-url" && self.crl_url.is_none()
                            || flag == "--ocsp-url" && self.ocsp_url.is_none())
                    {
                        "--pki-url"
                    } else {
                        flag
                    };
                    return Err(Error::InvalidArgument(format!(
                        "certificates would name {url} for revocation status, which relying parties on other hosts \
                         cannot reach: set {which} to the public address of the PKI listener, e.g. \
                         {which} http://ca.example.com"
                    )));
                }
            }
        }
        Ok(config)
    }
}

impl PkiConfig {
    /// The URLs written into certificates, given the PKI listener's bound address.
    pub fn urls(&self, bound: SocketAddr) -> StatusUrls {
        let base = self.pki_url.clone().unwrap_or_else(|| http_base(bound));
        let defaults = StatusUrls::under(&base);
        StatusUrls {
            crl_base: self.crl_url.clone().unwrap_or(defaults.crl_base),
            ocsp: self.ocsp_url.clone().unwrap_or(defaults.ocsp),
        }
    }
}

/// `http://ADDR` for a bound socket address (IPv6 in brackets; a wildcard address as `localhost`).
pub fn http_base(addr: SocketAddr) -> String {
    match addr.ip() {
        ip if ip.is_unspecified() => format!("http://localhost:{}", addr.port()),
        IpAddr::V6(ip) => format!("http://[{ip}]:{}", addr.port()),
        ip => format!("http://{ip}:{}", addr.port()),
    }
}

/// An http(s)://host[:port][/path] URL without query or fragment (it is written into certificates), without a
/// trailing slash.
fn http_url(flag: &str, url: &str) -> Result<String, Error> {
    let valid = (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() <= 200
        && url.is_ascii()
        && !url.contains(['?', '#', ' '])
        && url.split("://").nth(1).is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
    if !valid {
        return Err(Error::InvalidArgument(format!(
            "invalid {flag} {url:?}: expected http://host[:port][/path], e.g. http://ca.example.com"
        )));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// Whether `url`'s host is a loopback or wildcard address (or `localhost`).
fn local_host(url: &str) -> bool {
    let rest = url.split("://").nth(1).unwrap_or("");
    let authority = rest.split('/').next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(listen: &str, pki_url: Option<&str>) -> PkiArgs {
        PkiArgs { pki_listen: listen.parse().unwrap(), pki_url: pki_url.map(Into::into), crl_url: None, ocsp_url: None }
    }

    #[test]
    fn urls_are_checked() {
        assert_eq!(http_url("--pki-url", "http://ca.example.com:8080/").unwrap(), "http://ca.example.com:8080");
        for bad in ["ca.example.com", "ftp://x", "http://", "http:///x", "http://x/?a", "http://x/é"] {
            assert!(http_url("--pki-url", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_public_server_refuses_to_write_local_urls_into_certificates() {
        let public: SocketAddr = "0.0.0.0:8443".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.1:8443".parse().unwrap();
        for listen in ["0.0.0.0:8081", "127.0.0.1:8081", "[::]:8081"] {
            let error = args(listen, None).validate(public).unwrap_err().to_string();
            assert!(error.contains("--pki-url"), "{error}");
            assert!(args(listen, None).validate(loopback).is_ok(), "a loopback server may name itself");
        }
        for url in ["http://localhost:8081", "http://127.0.0.2", "http://[::1]:80", "http://0.0.0.0"] {
            assert!(args("0.0.0.0:8081", Some(url)).validate(public).is_err(), "{url}");
        }
        let ok = args("0.0.0.0:8081", Some("http://pki.example.com")).validate(public).unwrap();
        let urls = ok.urls("0.0.0.0:8081".parse().unwrap());
        assert_eq!(
            (urls.crl_base.as_str(), urls.ocsp.as_str()),
            ("http://pki.example.com", "http://pki.example.com/ocsp")
        );
    }
}
