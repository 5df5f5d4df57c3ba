//! Settings that are addresses: the WeChat base URL, the issuer, the database URL and the
//! trusted proxies. Each check says why a value is refused.

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::{
    ConfigError,
    catalog::{ISSUER, TRUSTED_PROXIES, WECHAT_BASE_URL, WECHAT_OPEN_URL},
    load::invalid,
};

/// A `postgres://` URL. It usually holds a password, so it prints only redacted: in
/// `Debug`, in `Display` and therefore in every log line and error message.
#[derive(Clone)]
pub struct DatabaseUrl {
    secret: SecretString,
    redacted: String,
}

impl DatabaseUrl {
    /// Checks the scheme; the error never repeats the value (it may hold a password).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url = Url::parse(raw.trim())
            .map_err(|e| format!("not a URL ({e}); expected postgres://USER:PASSWORD@HOST:PORT/DATABASE"))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(format!(
                "expected a postgres:// URL such as postgres://USER:PASSWORD@HOST:PORT/DATABASE, got scheme {:?}",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("the URL names no host; expected postgres://USER:PASSWORD@HOST:PORT/DATABASE".into());
        }
        Ok(Self { redacted: redacted(&url), secret: SecretString::from(url.as_str()) })
    }

    /// The URL with its password: only for connecting.
    pub fn expose(&self) -> &str {
        self.secret.expose_secret()
    }

    /// The URL with the password (in the authority or as a query parameter) replaced.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }
}

fn redacted(url: &Url) -> String {
    let mut url = url.clone();
    if url.password().is_some() {
        let _ = url.set_password(Some("REDACTED"));
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let secret = k.to_ascii_lowercase().contains("password");
                (k.into_owned(), if secret { "REDACTED".to_owned() } else { v.into_owned() })
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted)
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted)
    }
}

pub(super) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The WeChat API base URL.
pub(super) fn parse_base_url(raw: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(raw.trim()).map_err(|e| invalid(&WECHAT_BASE_URL, format!("not a URL ({e}): {raw:?}")))?;
    // The AppSecret travels in the query string: plain HTTP is only safe on this machine.
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        _ => {
            return Err(invalid(
                &WECHAT_BASE_URL,
                format!("must be an https:// URL (plain http only for loopback), got {raw:?}"),
            ));
        }
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(&WECHAT_BASE_URL, "must not have a query or fragment".into()));
    }
    Ok(url)
}

/// `WXAUTH_WECHAT_OPEN_URL`: where browsers are sent, so https (http for loopback only).
pub(super) fn parse_open_url(raw: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(raw.trim()).map_err(|e| invalid(&WECHAT_OPEN_URL, format!("not a URL ({e}): {raw:?}")))?;
    if !(url.scheme() == "https" || url.scheme() == "http" && is_loopback(&url))
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(invalid(
            &WECHAT_OPEN_URL,
            format!("must be an https:// URL (plain http only for loopback) without query or fragment, got {raw:?}"),
        ));
    }
    // A path prefix (a proxy's `https://proxy/wechat`) is kept: WeChat's pages go below it.
    let mut url = url;
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// A client's URL a browser login may return to: absolute, `https://` (plain `http://`
/// only for loopback, or anywhere in dev mode), without fragment (RFC 6749 3.1.2).
pub(super) fn redirect_uri(raw: &str, dev: bool) -> Result<String, String> {
    let url = Url::parse(raw).map_err(|e| format!("redirect_uri {raw:?} is not an absolute URL ({e})"))?;
    match url.scheme() {
        "https" => {}
        "http" if dev || is_loopback(&url) => {}
        _ => return Err(format!("redirect_uri {raw:?} must be https:// (plain http only for loopback)")),
    }
    if url.fragment().is_some() || raw.contains('#') {
        return Err(format!("redirect_uri {raw:?} must not have a fragment"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("redirect_uri {raw:?} names no host"));
    }
    Ok(raw.to_owned())
}

/// Comma-separated CIDRs or single addresses.
pub(super) fn trusted_proxies(raw: &str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ipnet::IpNet>().or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from)).map_err(|_| {
                invalid(&TRUSTED_PROXIES, format!("expected CIDRs such as 10.0.0.0/8, 127.0.0.1, got {s:?}"))
            })
        })
        .collect()
}

/// The issuer URL. Outside dev mode, plain `http://` only for a loopback host: verifiers
/// fetch the keys from it, and over plain HTTP anyone on the way could hand them others.
pub(super) fn parse_issuer(raw: &str, dev: bool) -> Result<String, ConfigError> {
    let url = Url::parse(raw.trim()).map_err(|e| invalid(&ISSUER, format!("not a URL ({e}): {raw:?}")))?;
    if !matches!(url.scheme(), "https" | "http") || url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(&ISSUER, format!("expected an http(s) URL without query or fragment, got {raw:?}")));
    }
    if url.scheme() == "http" && !is_loopback(&url) && !dev {
        return Err(invalid(
            &ISSUER,
            format!(
                "plain http:// is refused for a public host ({raw:?}): verifiers fetch the signing keys \
                 from the issuer, so use https://"
            ),
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}
