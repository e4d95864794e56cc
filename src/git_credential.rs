//! git's credential helper protocol: the `key=value` codec, with its I/O passed in.
//!
//! Follows git 2.47 (`Documentation/git-credential.txt`): lines up to 65535 bytes, NUL and CR
//! refused, `[]` keys repeat, unknown keys ignored, a blank line or end of input ends a
//! description. Error messages name the line number and the key, never a value, because values
//! may be passwords.

use crate::answer::Scheme;
use crate::secret::Secret;
use std::io::{self, BufRead, Write};

/// Longest line git itself accepts (`credential.c`: `LARGE_PACKET_MAX`-sized strbuf limit).
pub const MAX_LINE: usize = 65535;

/// One credential description, as git sends it to a helper or reads it back.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Credential {
    pub protocol: Option<String>,
    pub host: Option<String>,
    pub path: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub password_expiry_utc: Option<u64>,
    pub oauth_refresh_token: Option<Secret>,
    pub wwwauth: Vec<String>,
    pub capability: Vec<String>,
    pub authtype: Option<String>,
    pub credential: Option<Secret>,
    pub ephemeral: Option<bool>,
    pub state: Vec<String>,
    pub continue_: Option<bool>,
    pub quit: Option<bool>,
}

/// git's credential operations: what git asks a helper (`git-credential-azdo get`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Get,
    Store,
    Erase,
}

impl TryFrom<&str> for Action {
    type Error = ();

    /// The operation named by git's argument; anything else is not one of git's.
    fn try_from(op: &str) -> Result<Action, ()> {
        match op {
            "get" => Ok(Action::Get),
            "store" => Ok(Action::Store),
            "erase" => Ok(Action::Erase),
            _ => Err(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("line {line} of the credential input has no '=' (expected key=value)")]
    MissingEquals { line: usize },
    #[error("line {line} of the credential input contains a NUL byte")]
    Nul { line: usize },
    #[error("line {line} of the credential input contains a carriage return")]
    CarriageReturn { line: usize },
    #[error("line {line} of the credential input is longer than {MAX_LINE} bytes")]
    TooLong { line: usize },
    #[error("line {line} of the credential input is not valid UTF-8")]
    NotUtf8 { line: usize },
    #[error("value for '{key}' on line {line} is not valid: {why}")]
    BadValue {
        line: usize,
        key: String,
        why: &'static str,
    },
    #[error("cannot write '{key}': the value contains a newline or NUL")]
    Unencodable { key: &'static str },
    #[error("reading credential input: {0}")]
    Io(#[from] io::Error),
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

impl Credential {
    /// Reads one description: `key=value` lines up to a blank line or end of input.
    pub fn read_from(mut input: impl BufRead) -> Result<Self, ProtocolError> {
        let mut cred = Credential::default();
        let mut buf = Vec::with_capacity(256);
        let mut line_no = 0;
        loop {
            buf.clear();
            line_no += 1;
            // Read at most MAX_LINE bytes plus the newline, so a hostile input cannot make us
            // allocate without bound.
            let mut limited = io::Read::take(&mut input, MAX_LINE as u64 + 1);
            let n = limited.read_until(b'\n', &mut buf)?;
            if n == 0 {
                break;
            }
            let had_newline = buf.last() == Some(&b'\n');
            if had_newline {
                buf.pop();
            } else if n > MAX_LINE {
                return Err(ProtocolError::TooLong { line: line_no });
            }
            if buf.is_empty() {
                break;
            }
            if buf.contains(&0) {
                return Err(ProtocolError::Nul { line: line_no });
            }
            if buf.contains(&b'\r') {
                return Err(ProtocolError::CarriageReturn { line: line_no });
            }
            let line =
                std::str::from_utf8(&buf).map_err(|_| ProtocolError::NotUtf8 { line: line_no })?;
            let (key, value) = line
                .split_once('=')
                .ok_or(ProtocolError::MissingEquals { line: line_no })?;
            cred.set(line_no, key, value)?;
        }
        Ok(cred)
    }

    fn set(&mut self, line: usize, key: &str, value: &str) -> Result<(), ProtocolError> {
        let bad = |why| ProtocolError::BadValue {
            line,
            key: key.to_string(),
            why,
        };
        let v = || Some(value.to_string());
        match key {
            "protocol" => self.protocol = v(),
            "host" => self.host = v(),
            "path" => self.path = v(),
            "username" => self.username = v(),
            "password" => self.password = Some(Secret::new(value)),
            "password_expiry_utc" => {
                self.password_expiry_utc = Some(
                    value
                        .parse()
                        .map_err(|_| bad("expected seconds since 1970"))?,
                )
            }
            "oauth_refresh_token" => self.oauth_refresh_token = Some(Secret::new(value)),
            "authtype" => self.authtype = v(),
            "credential" => self.credential = Some(Secret::new(value)),
            "ephemeral" => self.ephemeral = Some(parse_bool(value).ok_or(bad("expected 0 or 1"))?),
            "continue" => self.continue_ = Some(parse_bool(value).ok_or(bad("expected 0 or 1"))?),
            "quit" => self.quit = Some(parse_bool(value).ok_or(bad("expected 0 or 1"))?),
            // git: an empty value for a `[]` key clears the list so far.
            "wwwauth[]" => push_or_clear(&mut self.wwwauth, value),
            "capability[]" => push_or_clear(&mut self.capability, value),
            "state[]" => push_or_clear(&mut self.state, value),
            _ => {} // unknown keys are ignored, as git does
        }
        Ok(())
    }

    pub fn has_capability(&self, cap: &str) -> bool {
        self.capability.iter().any(|c| c == cap)
    }

    /// Writes the description as `key=value` lines (no terminating blank line).
    pub fn write_to(&self, mut out: impl Write) -> Result<(), ProtocolError> {
        fn line(out: &mut impl Write, key: &'static str, v: &str) -> Result<(), ProtocolError> {
            if v.contains(['\n', '\0']) {
                return Err(ProtocolError::Unencodable { key });
            }
            writeln!(out, "{key}={v}")?;
            Ok(())
        }
        let b = |x: bool| if x { "1" } else { "0" };
        for cap in &self.capability {
            line(&mut out, "capability[]", cap)?;
        }
        if let Some(v) = &self.authtype {
            line(&mut out, "authtype", v)?;
        }
        if let Some(v) = &self.credential {
            line(&mut out, "credential", v.expose())?;
        }
        if let Some(v) = self.ephemeral {
            line(&mut out, "ephemeral", b(v))?;
        }
        if let Some(v) = &self.protocol {
            line(&mut out, "protocol", v)?;
        }
        if let Some(v) = &self.host {
            line(&mut out, "host", v)?;
        }
        if let Some(v) = &self.path {
            line(&mut out, "path", v)?;
        }
        if let Some(v) = &self.username {
            line(&mut out, "username", v)?;
        }
        if let Some(v) = &self.password {
            line(&mut out, "password", v.expose())?;
        }
        if let Some(v) = self.password_expiry_utc {
            line(&mut out, "password_expiry_utc", &v.to_string())?;
        }
        if let Some(v) = &self.oauth_refresh_token {
            line(&mut out, "oauth_refresh_token", v.expose())?;
        }
        for w in &self.wwwauth {
            line(&mut out, "wwwauth[]", w)?;
        }
        for s in &self.state {
            line(&mut out, "state[]", s)?;
        }
        if let Some(v) = self.continue_ {
            line(&mut out, "continue", b(v))?;
        }
        if let Some(v) = self.quit {
            line(&mut out, "quit", b(v))?;
        }
        Ok(())
    }

    /// The answer to `get` for an Entra access token: Bearer when the daemon chose it
    /// ([`crate::answer::choose`]) and git announced `capability[]=authtype`, else the token as
    /// a Basic password.
    pub fn answer(&self, token: &Secret, expires_at: u64, scheme: Scheme) -> Credential {
        if scheme == Scheme::Bearer && self.has_capability("authtype") {
            Credential {
                capability: vec!["authtype".into()],
                authtype: Some("Bearer".into()),
                credential: Some(token.clone()),
                ephemeral: Some(true),
                password_expiry_utc: Some(expires_at),
                ..Default::default()
            }
        } else {
            Credential {
                username: Some(
                    self.username
                        .clone()
                        .filter(|u| !u.is_empty())
                        .unwrap_or_else(|| "azdo".into()),
                ),
                password: Some(token.clone()),
                password_expiry_utc: Some(expires_at),
                ..Default::default()
            }
        }
    }
}

fn push_or_clear(list: &mut Vec<String>, value: &str) {
    if value.is_empty() {
        list.clear();
    } else {
        list.push(value.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &[u8]) -> Result<Credential, ProtocolError> {
        Credential::read_from(s)
    }

    #[test]
    fn parses_every_attribute_git_sends() {
        let c = parse(
            b"capability[]=authtype\ncapability[]=state\nprotocol=https\nhost=dev.azure.com\n\
path=contoso/web/_git/web\nusername=contoso\npassword=pw\npassword_expiry_utc=1700000000\n\
oauth_refresh_token=rt\nwwwauth[]=Bearer authorization_uri=https://login.microsoftonline.com/t\n\
wwwauth[]=Basic realm=\"x\"\nauthtype=Bearer\ncredential=tok\nephemeral=1\nstate[]=a=b\n\
continue=0\nquit=false\nfuture_key=whatever\n\nprotocol=ignored-after-blank\n",
        )
        .unwrap();
        assert_eq!(c.protocol.as_deref(), Some("https"));
        assert_eq!(c.host.as_deref(), Some("dev.azure.com"));
        assert_eq!(c.path.as_deref(), Some("contoso/web/_git/web"));
        assert_eq!(c.username.as_deref(), Some("contoso"));
        assert_eq!(c.password.as_ref().unwrap().expose(), "pw");
        assert_eq!(c.password_expiry_utc, Some(1_700_000_000));
        assert_eq!(c.oauth_refresh_token.as_ref().unwrap().expose(), "rt");
        assert_eq!(c.wwwauth.len(), 2);
        assert_eq!(c.capability, vec!["authtype", "state"]);
        assert_eq!(c.authtype.as_deref(), Some("Bearer"));
        assert_eq!(c.credential.as_ref().unwrap().expose(), "tok");
        assert_eq!(c.ephemeral, Some(true));
        assert_eq!(c.state, vec!["a=b"]);
        assert_eq!(c.continue_, Some(false));
        assert_eq!(c.quit, Some(false));
    }

    #[test]
    fn round_trips() {
        let mut c = Credential {
            protocol: Some("https".into()),
            host: Some("dev.azure.com".into()),
            path: Some("o/p/_git/r".into()),
            username: Some("u".into()),
            password: Some(Secret::new("p=w")),
            password_expiry_utc: Some(5),
            wwwauth: vec!["Bearer x=y".into()],
            capability: vec!["authtype".into()],
            state: vec!["k".into()],
            ephemeral: Some(false),
            quit: Some(true),
            ..Default::default()
        };
        c.credential = Some(Secret::new("t"));
        c.authtype = Some("Bearer".into());
        let mut out = Vec::new();
        c.write_to(&mut out).unwrap();
        assert_eq!(parse(&out).unwrap(), c);
    }

    #[test]
    fn refuses_bad_lines_without_echoing_values() {
        let e = parse(b"protocol=https\npassword-secret-no-equals\n").unwrap_err();
        assert!(matches!(e, ProtocolError::MissingEquals { line: 2 }));
        assert!(!e.to_string().contains("secret"));
        assert!(matches!(
            parse(b"host=a\0b\n").unwrap_err(),
            ProtocolError::Nul { line: 1 }
        ));
        assert!(matches!(
            parse(b"host=ab\r\n").unwrap_err(),
            ProtocolError::CarriageReturn { line: 1 }
        ));
        assert!(matches!(
            parse(b"ephemeral=yes\n").unwrap_err(),
            ProtocolError::BadValue { .. }
        ));
    }

    #[test]
    fn line_length_limit_is_exact() {
        let mut ok = b"path=".to_vec();
        ok.resize(MAX_LINE, b'a');
        ok.push(b'\n');
        assert_eq!(parse(&ok).unwrap().path.unwrap().len(), MAX_LINE - 5);
        let mut long = b"path=".to_vec();
        long.resize(MAX_LINE + 1, b'a');
        long.push(b'\n');
        assert!(matches!(
            parse(&long).unwrap_err(),
            ProtocolError::TooLong { line: 1 }
        ));
        // Also without a trailing newline.
        long.pop();
        assert!(matches!(
            parse(&long).unwrap_err(),
            ProtocolError::TooLong { .. }
        ));
    }

    #[test]
    fn empty_list_value_clears() {
        let c = parse(b"wwwauth[]=a\nwwwauth[]=\nwwwauth[]=b\n").unwrap();
        assert_eq!(c.wwwauth, vec!["b"]);
    }

    #[test]
    fn answers_bearer_only_when_chosen_and_announced() {
        let tok = Secret::new("T");
        let bearer = parse(b"capability[]=authtype\nprotocol=https\n")
            .unwrap()
            .answer(&tok, 9, Scheme::Bearer);
        let mut out = Vec::new();
        bearer.write_to(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "capability[]=authtype\nauthtype=Bearer\ncredential=T\nephemeral=1\npassword_expiry_utc=9\n"
        );
        let basic = "username=contoso\npassword=T\npassword_expiry_utc=9\n";
        for (input, scheme) in [
            // Bearer chosen, but this git cannot take it.
            (&b"protocol=https\nusername=contoso\n"[..], Scheme::Bearer),
            // It could, but Basic was chosen (a git that drops Bearer on the probe).
            (
                b"capability[]=authtype\nprotocol=https\nusername=contoso\n",
                Scheme::Basic,
            ),
        ] {
            let mut out = Vec::new();
            let answer = parse(input).unwrap().answer(&tok, 9, scheme);
            answer.write_to(&mut out).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), basic);
        }
    }

    #[test]
    fn refuses_to_encode_newlines() {
        let c = Credential {
            host: Some("a\nb".into()),
            ..Default::default()
        };
        assert!(c.write_to(Vec::new()).is_err());
    }
}
