//! Which site a request was made to, and from where, as far as it can be believed.
//!
//! Behind a proxy the server sees the proxy's address and whatever `Host` the proxy sends. The
//! `X-Forwarded-For/-Host/-Proto` headers say what the browser used, but anyone can send them:
//! they count only from an address in `TRUSTED_PROXIES`. `PUBLIC_URL`, when set, says outright
//! which origin people use; the same-origin rule then compares scheme and host with it, and an
//! `https` origin makes the session cookie `Secure` and `__Host-` (no other site on the domain
//! can set or shadow it).

use std::net::IpAddr;

use axum::http::{HeaderMap, header};
use batchwatch_core::account::same_origin;

/// The session cookie's name over plain HTTP (a local try), and over HTTPS.
pub const COOKIE: &str = "bw_session";
const HOST_COOKIE: &str = "__Host-bw_session";

/// The deployment's settings, from the configuration.
#[derive(Debug, Clone, Default)]
pub struct SiteSettings {
    /// `scheme://authority`, lower-case.
    pub public_url: Option<String>,
    pub trusted_proxies: Vec<IpAddr>,
}

/// One request's site and client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSite {
    /// The client's address: the peer, or what a trusted proxy says the client was.
    pub client: String,
    /// The host (and port) the browser used.
    pub authority: String,
    /// `https` or `http` when known (`PUBLIC_URL`, or a trusted proxy said so); without it only
    /// the host is compared, since a TLS proxy that says nothing leaves the server seeing HTTP.
    pub scheme: Option<String>,
}

impl RequestSite {
    pub fn of(settings: &SiteSettings, peer: Option<IpAddr>, headers: &HeaderMap) -> Self {
        let trusted = |ip: &IpAddr| settings.trusted_proxies.contains(ip);
        let from_proxy = peer.is_some_and(|p| trusted(&p));
        let forwarded = |name: &str| {
            let value = headers.get(name)?.to_str().ok()?;
            from_proxy.then(|| value.trim().to_owned()).filter(|v| !v.is_empty())
        };
        // The rightmost address no trusted proxy added is the client's.
        let forwarded_client = forwarded("x-forwarded-for").and_then(|chain| {
            let untrusted =
                chain.rsplit(',').map(str::trim).find(|a| a.parse().map_or(true, |ip| !trusted(&ip)));
            untrusted.map(str::to_owned)
        });
        let client = forwarded_client.or(peer.map(|p| p.to_string())).unwrap_or_else(|| "unknown".to_owned());
        if let Some((scheme, authority)) = settings.public_url.as_deref().and_then(|u| u.split_once("://")) {
            return Self { client, authority: authority.to_owned(), scheme: Some(scheme.to_owned()) };
        }
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned);
        let authority = forwarded("x-forwarded-host").or(host).unwrap_or_default();
        let scheme = forwarded("x-forwarded-proto")
            .map(|p| p.to_ascii_lowercase())
            .filter(|p| p == "https" || p == "http");
        Self { client, authority, scheme }
    }

    pub fn https(&self) -> bool {
        self.scheme.as_deref() == Some("https")
    }

    /// The session cookie's name on this site.
    pub fn cookie_name(&self) -> &'static str {
        if self.https() { HOST_COOKIE } else { COOKIE }
    }

    /// Whether `origin` (an `Origin`, or a `Referer` URL) names this site.
    pub fn admits(&self, origin: &str) -> bool {
        let scheme_matches = self.scheme.as_deref().is_none_or(|scheme| {
            origin.split_once("://").is_some_and(|(s, _)| s.eq_ignore_ascii_case(scheme))
        });
        scheme_matches && same_origin(origin, &self.authority)
    }
}

/// `PUBLIC_URL`: an `http` or `https` origin, with no path; kept as `scheme://authority`.
pub fn parse_public_url(value: &str) -> Result<String, String> {
    let bad = || format!("{value:?} is not an origin like https://watch.example.com");
    let (scheme, rest) = value.split_once("://").ok_or_else(bad)?;
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest.strip_suffix('/').unwrap_or(rest).to_ascii_lowercase();
    let valid_authority = !authority.is_empty()
        && authority.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if !matches!(scheme.as_str(), "http" | "https") || !valid_authority {
        return Err(bad());
    }
    Ok(format!("{scheme}://{authority}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap())).collect()
    }

    const PROXY: [u8; 4] = [10, 0, 0, 2];

    fn settings(public_url: Option<&str>) -> SiteSettings {
        SiteSettings { public_url: public_url.map(str::to_owned), trusted_proxies: vec![IpAddr::from(PROXY)] }
    }

    #[test]
    fn forwarded_headers_count_only_from_a_trusted_proxy() {
        let sent = headers(&[
            ("host", "internal:3000"),
            ("x-forwarded-host", "watch.example"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-for", "203.0.113.9, 10.0.0.2"),
        ]);
        let via_proxy = RequestSite::of(&settings(None), Some(IpAddr::from(PROXY)), &sent);
        assert_eq!(via_proxy.authority, "watch.example");
        assert_eq!(via_proxy.scheme.as_deref(), Some("https"));
        assert_eq!(via_proxy.client, "203.0.113.9");
        assert_eq!(via_proxy.cookie_name(), "__Host-bw_session");

        let direct = RequestSite::of(&settings(None), Some(IpAddr::from([198, 51, 100, 7])), &sent);
        assert_eq!(direct.authority, "internal:3000", "anyone may send X-Forwarded-Host");
        assert_eq!(direct.scheme, None);
        assert_eq!(direct.client, "198.51.100.7");
        assert_eq!(direct.cookie_name(), "bw_session");
    }

    #[test]
    fn the_public_url_decides_the_origin() {
        let sent = headers(&[("host", "internal:3000")]);
        let site = RequestSite::of(&settings(Some("https://watch.example")), None, &sent);
        assert!(site.admits("https://watch.example"));
        assert!(!site.admits("http://watch.example"), "the scheme counts too");
        assert!(!site.admits("https://internal:3000"));
        assert!(site.https());
    }

    #[test]
    fn without_a_known_scheme_the_host_alone_is_compared() {
        let site = RequestSite::of(&SiteSettings::default(), None, &headers(&[("host", "watch.example")]));
        assert!(site.admits("https://watch.example") && site.admits("http://watch.example"));
        assert!(!site.admits("https://evil.example"));
    }

    #[test]
    fn public_urls_are_origins() {
        assert_eq!(parse_public_url("HTTPS://Watch.Example/").unwrap(), "https://watch.example");
        assert_eq!(parse_public_url("http://127.0.0.1:3000").unwrap(), "http://127.0.0.1:3000");
        for bad in ["watch.example", "ftp://watch.example", "https://", "https://a/b", "https://a b"] {
            assert!(parse_public_url(bad).is_err(), "{bad}");
        }
    }
}
