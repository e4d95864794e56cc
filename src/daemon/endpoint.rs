//! Which addresses the daemon may send a secret to: `https` only (authorities, OIDC request
//! URLs, identity endpoints), with one exception for the managed-identity endpoints that Azure
//! itself serves over plain http on the machine: IMDS's fixed `169.254.169.254`, and App
//! Service's and Azure Arc's endpoints on loopback (which the tests' mocks use too).

use std::net::IpAddr;

/// An address the daemon will not send a secret to. `what` names the setting; `shown` is the
/// URL without user information, path or query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("{what} must be an https URL, not {shown}; nothing was sent there")]
    NotHttps { what: String, shown: String },
    #[error(
        "{what} must be an https URL (or http on this machine's loopback, or IMDS's 169.254.169.254), not {shown}; nothing was sent there"
    )]
    NotHttpsOrLocal { what: String, shown: String },
}

/// `url` is an `https` URL with a host. `what` names it in the error, which says that nothing
/// was sent.
pub fn require_https(what: &str, url: &str) -> Result<(), EndpointError> {
    match url::Url::parse(url) {
        Ok(u) if u.scheme() == "https" && u.host().is_some() => Ok(()),
        _ => Err(EndpointError::NotHttps {
            what: what.to_string(),
            shown: shown(url),
        }),
    }
}

/// As [`require_https`], or `http` to this machine's loopback or to IMDS's address: where
/// Azure's managed-identity endpoints live.
pub fn require_https_or_local(what: &str, url: &str) -> Result<(), EndpointError> {
    let local = url::Url::parse(url).ok().is_some_and(|u| {
        u.scheme() == "http"
            && match u.host() {
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => {
                    IpAddr::V4(ip).is_loopback() || ip.octets() == [169, 254, 169, 254]
                }
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            }
    });
    match local {
        true => Ok(()),
        false => require_https(what, url).map_err(|_| EndpointError::NotHttpsOrLocal {
            what: what.to_string(),
            shown: shown(url),
        }),
    }
}

/// The URL for an error message, without any user information or query (it may carry a
/// token), and cut short.
fn shown(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "a value that is not a URL".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_everywhere_but_the_local_identity_endpoints() {
        for ok in [
            "https://login.microsoftonline.com",
            "https://127.0.0.1:8443/x",
        ] {
            assert!(require_https("x", ok).is_ok(), "{ok}");
            assert!(require_https_or_local("x", ok).is_ok(), "{ok}");
        }
        for local in [
            "http://169.254.169.254",
            "http://127.0.0.1:41741/MSI/token/",
            "http://localhost:40342",
            "http://[::1]:1/x",
        ] {
            assert!(require_https("x", local).is_err(), "{local}");
            assert!(require_https_or_local("x", local).is_ok(), "{local}");
        }
        for bad in [
            "http://evil.example/steal",
            "http://10.0.0.1/",
            "http://169.254.169.253",
            "ftp://127.0.0.1/",
            "not a url",
            "",
        ] {
            assert!(require_https("x", bad).is_err(), "{bad}");
            assert!(require_https_or_local("x", bad).is_err(), "{bad}");
        }
        let e = require_https(
            "SYSTEM_OIDCREQUESTURI",
            "http://u:p@evil.example:8/s?t=SECRET",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("http://evil.example:8") && !e.contains("SECRET") && !e.contains("u:p"),
            "{e}"
        );
        assert!(e.contains("nothing was sent"), "{e}");
    }
}
