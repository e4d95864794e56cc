//! Host policy: which requests get an answer, and for which Azure DevOps organization.
//!
//! Only `https`, only `dev.azure.com` (port 443), `{org}.visualstudio.com`, and hosts the user
//! lists in the configuration. The organization comes from the first path segment
//! (`credential.useHttpPath`), else the `org@` user name, else the `{org}.visualstudio.com` host.
//! This module does no I/O so the client can decide before it touches anything.

use crate::git_credential::Credential;

/// What to do with one credential request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not ours: print nothing, exit 0, let git ask the next helper.
    NotOurs,
    /// Ours, but the organization cannot be told from what git sent.
    NoOrganization { host: String },
    /// Ours: answer for this organization.
    Serve(Target),
}

/// An Azure DevOps organization reached through one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub org: String,
    /// The host as git gave it, lower-cased (may carry a port for configured hosts).
    pub host: String,
}

/// Why the input cannot be judged at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("the credential input has no 'host' line")]
    MissingHost,
    #[error("the credential input has no 'protocol' line")]
    MissingProtocol,
}

/// True for the hosts served without any configuration.
pub fn is_builtin_host(host: &str) -> bool {
    builtin_org_of_host(host).is_some() || is_dev_azure(host)
}

fn is_dev_azure(host: &str) -> bool {
    host == "dev.azure.com" || host == "dev.azure.com:443"
}

/// `{org}.visualstudio.com` → `org`.
fn builtin_org_of_host(host: &str) -> Option<&str> {
    let host = host.strip_suffix(":443").unwrap_or(host);
    let org = host.strip_suffix(".visualstudio.com")?;
    valid_org(org).then_some(org)
}

/// Azure DevOps organization names: letters, digits, hyphens (and `_`, seen in old
/// collections), 1 to 50 characters, not starting or ending with a hyphen.
pub fn valid_org(org: &str) -> bool {
    !org.is_empty()
        && org.len() <= 50
        && !org.starts_with('-')
        && !org.ends_with('-')
        && org
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Decides whether and for which organization to answer. `extra_hosts` is only consulted
/// (and so only needs loading) for hosts that are not built in; pass a closure that loads it.
pub fn decide<F, I>(cred: &Credential, extra_hosts: F) -> Result<Decision, PolicyError>
where
    F: FnOnce() -> I,
    I: IntoIterator<Item = String>,
{
    let protocol = cred
        .protocol
        .as_deref()
        .ok_or(PolicyError::MissingProtocol)?;
    let host = cred.host.as_deref().ok_or(PolicyError::MissingHost)?;
    if host.is_empty() {
        return Err(PolicyError::MissingHost);
    }
    if protocol != "https" {
        return Ok(Decision::NotOurs);
    }
    let host = host.to_ascii_lowercase();
    if let Some(org) = builtin_org_of_host(&host) {
        return Ok(Decision::Serve(Target {
            org: org.to_string(),
            host: host.clone(),
        }));
    }
    let ours = is_dev_azure(&host)
        || extra_hosts()
            .into_iter()
            .any(|h| h.eq_ignore_ascii_case(&host));
    if !ours {
        return Ok(Decision::NotOurs);
    }
    let from_path = cred
        .path
        .as_deref()
        .and_then(|p| p.trim_start_matches('/').split('/').next())
        .filter(|s| !s.is_empty());
    let from_user = cred.username.as_deref().filter(|s| !s.is_empty());
    match from_path.or(from_user) {
        Some(org) if valid_org(org) => Ok(Decision::Serve(Target {
            org: org.to_string(),
            host,
        })),
        _ => Ok(Decision::NoOrganization { host }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(protocol: &str, host: &str, path: Option<&str>, user: Option<&str>) -> Credential {
        Credential {
            protocol: Some(protocol.into()),
            host: Some(host.into()),
            path: path.map(Into::into),
            username: user.map(Into::into),
            ..Default::default()
        }
    }

    fn none() -> Vec<String> {
        vec![]
    }

    fn serve(org: &str, host: &str) -> Decision {
        Decision::Serve(Target {
            org: org.into(),
            host: host.into(),
        })
    }

    #[test]
    fn dev_azure_org_from_path_then_user() {
        let d = |p, u| decide(&cred("https", "dev.azure.com", p, u), none).unwrap();
        assert_eq!(
            d(Some("contoso/web/_git/web"), None),
            serve("contoso", "dev.azure.com")
        );
        assert_eq!(
            d(Some("contoso/web/_git/web"), Some("other")),
            serve("contoso", "dev.azure.com")
        );
        assert_eq!(
            d(None, Some("fabrikam")),
            serve("fabrikam", "dev.azure.com")
        );
        assert_eq!(
            d(None, None),
            Decision::NoOrganization {
                host: "dev.azure.com".into()
            }
        );
        assert_eq!(
            d(Some("../etc/_git/x"), None),
            Decision::NoOrganization {
                host: "dev.azure.com".into()
            }
        );
    }

    #[test]
    fn visualstudio_host_names_the_org() {
        assert_eq!(
            decide(
                &cred(
                    "https",
                    "Contoso.VisualStudio.com",
                    Some("DefaultCollection/p/_git/r"),
                    None
                ),
                none
            )
            .unwrap(),
            serve("contoso", "contoso.visualstudio.com")
        );
        // Not a single-label subdomain: not ours.
        assert_eq!(
            decide(&cred("https", "a.b.visualstudio.com", None, None), none).unwrap(),
            Decision::NotOurs
        );
    }

    #[test]
    fn everything_else_is_not_ours() {
        for (proto, host) in [
            ("http", "dev.azure.com"),
            ("http", "contoso.visualstudio.com"),
            ("https", "github.com"),
            ("https", "dev.azure.com.evil.example"),
            ("https", "evildev.azure.com"),
            ("https", "dev.azure.com:8443"),
            ("https", "visualstudio.com"),
            ("https", "contoso.visualstudio.com.evil.example"),
            ("ssh", "dev.azure.com"),
        ] {
            assert_eq!(
                decide(&cred(proto, host, Some("o/p"), None), none).unwrap(),
                Decision::NotOurs,
                "{proto}://{host}"
            );
        }
    }

    #[test]
    fn configured_hosts_are_loaded_only_when_needed() {
        let mut loaded = false;
        let _ = decide(&cred("https", "dev.azure.com", Some("o"), None), || {
            loaded = true;
            none()
        });
        assert!(!loaded);
        let d = decide(
            &cred("https", "ado.corp.example:8443", Some("o/p/_git/r"), None),
            || vec!["ADO.corp.example:8443".to_string()],
        )
        .unwrap();
        assert_eq!(d, serve("o", "ado.corp.example:8443"));
        let d = decide(
            &cred("http", "ado.corp.example:8443", Some("o"), None),
            || vec!["ado.corp.example:8443".to_string()],
        )
        .unwrap();
        assert_eq!(d, Decision::NotOurs);
    }

    #[test]
    fn missing_fields_are_errors() {
        let mut c = cred("https", "dev.azure.com", None, None);
        c.host = None;
        assert_eq!(decide(&c, none), Err(PolicyError::MissingHost));
        c.host = Some(String::new());
        assert_eq!(decide(&c, none), Err(PolicyError::MissingHost));
        c.host = Some("dev.azure.com".into());
        c.protocol = None;
        assert_eq!(decide(&c, none), Err(PolicyError::MissingProtocol));
    }
}
