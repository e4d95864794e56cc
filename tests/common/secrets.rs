//! The secret ledger and the leak scan. Every mock records into its world's [`Secrets`] what
//! it hands out (access and refresh tokens, device and authorization codes, federated tokens)
//! and what it is shown (client secrets, client assertions, PKCE verifiers); [`Scanner`] then
//! looks for each of them, whole or cut short, in text the product wrote. `World` runs it over
//! the daemon's logs, every command's output and the daemon's process title (see
//! `World::scan_for_secrets`).
//!
//! Matching: a secret shorter than [`MIN_LEN`] characters is not looked for (too likely to
//! occur by chance: `"right"`, `"private"`); a longer one is found whole, or cut short to at
//! least its first [`ANCHOR`] characters. A JWT's header segment is public (every token the
//! mock Entra issues starts with the same one), so a cut-short JWT counts only once it runs
//! past the header. A finding never carries the secret: its kind, length and first four
//! characters, and the line it was found on with every known secret replaced by `<kind>`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Secrets shorter than this are not looked for.
pub const MIN_LEN: usize = 12;
/// A secret cut short to this many leading characters (or more) still counts.
pub const ANCHOR: usize = 24;

/// What a secret is; named in findings instead of the secret itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecretKind {
    AccessToken,
    RefreshToken,
    /// The `device_code` of the device flow (the `user_code` is shown to people: not secret).
    DeviceCode,
    AuthorizationCode,
    PkceVerifier,
    ClientSecret,
    /// A JWT client assertion (federated token or certificate-signed) sent to Entra.
    ClientAssertion,
    /// A CI system's OIDC token, or the content of a federated token file.
    FederatedToken,
    /// The bearer token a CI job presents to its OIDC endpoint (`ACTIONS_ID_TOKEN_REQUEST_TOKEN`,
    /// `SYSTEM_ACCESSTOKEN`).
    CiJobToken,
    /// App Service's `IDENTITY_HEADER`.
    IdentityHeader,
    /// The content of an Azure Arc `.key` file.
    ArcKey,
    /// A line of a PEM private key.
    PrivateKey,
}

impl fmt::Display for SecretKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SecretKind::AccessToken => "access token",
            SecretKind::RefreshToken => "refresh token",
            SecretKind::DeviceCode => "device code",
            SecretKind::AuthorizationCode => "authorization code",
            SecretKind::PkceVerifier => "PKCE code verifier",
            SecretKind::ClientSecret => "client secret",
            SecretKind::ClientAssertion => "client assertion",
            SecretKind::FederatedToken => "federated token",
            SecretKind::CiJobToken => "CI job token",
            SecretKind::IdentityHeader => "App Service identity header",
            SecretKind::ArcKey => "Azure Arc key",
            SecretKind::PrivateKey => "private key",
        })
    }
}

/// One secret in a ledger: what it is, who recorded it (`"entra"`, `"vssps"`, `"imds"`,
/// `"oidc"`, `"world"`) and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRecord {
    pub kind: SecretKind,
    pub source: &'static str,
    pub value: String,
}

#[derive(Default)]
struct Ledger {
    seen: HashSet<String>,
    records: Vec<SecretRecord>,
}

/// A world's ledger of secrets; cheap to clone, shared by every mock of the world (each is
/// started from the world's `TestCa`, which carries it). A value recorded twice keeps its
/// first kind.
#[derive(Clone, Default)]
pub struct Secrets(Arc<Mutex<Ledger>>);

impl Secrets {
    pub fn record(&self, kind: SecretKind, source: &'static str, value: &str) {
        if value.is_empty() {
            return;
        }
        let mut l = self.0.lock().unwrap();
        if l.seen.insert(value.to_string()) {
            l.records.push(SecretRecord {
                kind,
                source,
                value: value.to_string(),
            });
        }
    }

    /// Everything recorded so far, in order.
    pub fn all(&self) -> Vec<SecretRecord> {
        self.0.lock().unwrap().records.clone()
    }

    /// What `source` recorded so far.
    pub fn recorded_by(&self, source: &str) -> Vec<SecretRecord> {
        let l = self.0.lock().unwrap();
        l.records
            .iter()
            .filter(|r| r.source == source)
            .cloned()
            .collect()
    }
}

/// Which stream a text is: on stdout, and only there, an access token may stand alone on a
/// `password=` or `credential=` line (a credential helper's answer, the product's purpose).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    /// Anything else: stderr, logs, process titles. No secret of any kind.
    Other,
}

/// A secret found where it must not be. Shows no more of it than its length and first four
/// characters.
#[derive(Clone, Debug)]
pub struct Finding {
    pub kind: SecretKind,
    pub source: &'static str,
    /// Where: the file and line, or which command and stream.
    pub place: String,
    pub len: usize,
    pub head: String,
    /// How many leading characters of the secret were there (`len` when whole).
    pub matched: usize,
    /// The line it was on, every known secret replaced by `<kind>`, at most 200 characters.
    pub context: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match self.matched == self.len {
            true => "whole".to_string(),
            false => format!("its first {} characters", self.matched),
        };
        write!(
            f,
            "{} from {} (length {}, starts {:?}), {how}, in {}: {}",
            self.kind, self.source, self.len, self.head, self.place, self.context
        )
    }
}

struct Entry {
    kind: SecretKind,
    source: &'static str,
    value: Vec<u8>,
    /// Leading bytes that must match for a hit to be considered.
    anchor: usize,
    /// A cut-short match must be longer than this (a JWT's header segment and its dot).
    public: usize,
}

struct Hit {
    at: usize,
    entry: usize,
    len: usize,
}

/// Finds known secrets in text. Built once per scan from a ledger snapshot.
pub struct Scanner {
    entries: Vec<Entry>,
    /// First two bytes of each anchor -> the entries with it.
    starts: HashMap<[u8; 2], Vec<usize>>,
    /// `starts` as a 64 Ki bitmap, so most positions cost one lookup.
    filter: Vec<bool>,
}

impl Scanner {
    pub fn new(secrets: &[SecretRecord]) -> Scanner {
        let mut entries = Vec::new();
        for r in secrets {
            let mut variants = vec![r.value.clone()];
            // As it would appear in a URL query or a form body.
            let encoded: String =
                url::form_urlencoded::byte_serialize(r.value.as_bytes()).collect();
            if encoded != r.value {
                variants.push(encoded);
            }
            for v in variants.into_iter().filter(|v| v.len() >= MIN_LEN) {
                entries.push(Entry {
                    kind: r.kind,
                    source: r.source,
                    anchor: v.len().min(ANCHOR),
                    public: jwt_header_len(&v),
                    value: v.into_bytes(),
                });
            }
        }
        let mut starts: HashMap<[u8; 2], Vec<usize>> = HashMap::new();
        let mut filter = vec![false; 1 << 16];
        for (i, e) in entries.iter().enumerate() {
            let key = [e.value[0], e.value[1]];
            starts.entry(key).or_default().push(i);
            filter[usize::from(key[0]) << 8 | usize::from(key[1])] = true;
        }
        Scanner {
            entries,
            starts,
            filter,
        }
    }

    /// Every occurrence, left to right; at each position the longest match wins and the scan
    /// resumes after it.
    fn hits(&self, text: &[u8]) -> Vec<Hit> {
        let mut hits = Vec::new();
        let mut i = 0;
        while i + 1 < text.len() {
            if !self.filter[usize::from(text[i]) << 8 | usize::from(text[i + 1])] {
                i += 1;
                continue;
            }
            let rest = &text[i..];
            let mut best: Option<Hit> = None;
            for &e in &self.starts[&[text[i], text[i + 1]]] {
                let entry = &self.entries[e];
                if !rest.starts_with(&entry.value[..entry.anchor]) {
                    continue;
                }
                let len = common_prefix(rest, &entry.value);
                let counts = len == entry.value.len() || (len >= ANCHOR && len > entry.public);
                if counts && best.as_ref().is_none_or(|b| len > b.len) {
                    best = Some(Hit {
                        at: i,
                        entry: e,
                        len,
                    });
                }
            }
            match best {
                Some(h) => {
                    i += h.len;
                    hits.push(h);
                }
                None => i += 1,
            }
        }
        hits
    }

    /// The findings in `text`, found at `place` (a line number is added for multi-line text).
    pub fn scan(&self, text: &[u8], place: &str, stream: Stream) -> Vec<Finding> {
        let mut found = Vec::new();
        for h in self.hits(text) {
            let e = &self.entries[h.entry];
            let start = text[..h.at]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p + 1);
            let end = text[h.at..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(text.len(), |p| h.at + p);
            let line = text[start..end]
                .strip_suffix(b"\r")
                .unwrap_or(&text[start..end]);
            let whole = h.len == e.value.len();
            let answer = [&b"password="[..], b"credential="]
                .iter()
                .any(|k| line.strip_prefix(*k) == Some(&e.value[..]));
            if stream == Stream::Stdout && e.kind == SecretKind::AccessToken && whole && answer {
                continue;
            }
            let line_no = text[..h.at].iter().filter(|&&b| b == b'\n').count() + 1;
            let place = match text.contains(&b'\n') {
                true => format!("{place}, line {line_no}"),
                false => place.to_string(),
            };
            let context = self.redact(&String::from_utf8_lossy(line));
            found.push(Finding {
                kind: e.kind,
                source: e.source,
                place,
                len: e.value.len(),
                head: String::from_utf8_lossy(&e.value[..4]).into_owned(),
                matched: h.len,
                context: context.chars().take(200).collect(),
            });
        }
        found
    }

    /// `text` with every known secret (whole or cut short, as `scan` finds them) replaced by
    /// `<kind>`.
    pub fn redact(&self, text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut last = 0;
        for h in self.hits(bytes) {
            out.extend_from_slice(&bytes[last..h.at]);
            out.extend_from_slice(format!("<{}>", self.entries[h.entry].kind).as_bytes());
            last = h.at + h.len;
        }
        out.extend_from_slice(&bytes[last..]);
        String::from_utf8_lossy(&out).into_owned()
    }
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The length of a JWT's header segment plus its dot, 0 for anything else.
fn jwt_header_len(v: &str) -> usize {
    let parts: Vec<&str> = v.split('.').collect();
    let header = parts.first().and_then(|h| URL_SAFE_NO_PAD.decode(h).ok());
    let is_jwt = parts.len() == 3
        && header
            .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
            .is_some_and(|h| h.get("alg").is_some());
    match is_jwt {
        true => parts[0].len() + 1,
        false => 0,
    }
}

/// The base64 lines of every PEM private-key block in `pem`.
pub fn private_key_lines(pem: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut inside = false;
    for l in pem.lines().map(str::trim) {
        if l.starts_with("-----BEGIN") && l.contains("PRIVATE KEY") {
            inside = true;
        } else if l.starts_with("-----END") {
            inside = false;
        } else if inside && !l.is_empty() && !l.contains(':') {
            lines.push(l.to_string());
        }
    }
    lines
}
