//! Fuzz target `credential_codec`: git's credential-helper codec (`git_credential::Credential`).
//!
//! Whatever `read_from` accepts must write back (`write_to`) and read again to an equal
//! description, in every field, and write to the same bytes again; reading must not depend on
//! how the input is buffered; errors name only known keys, never a value; nothing panics.
#![no_main]

use git_credential_azdo::answer::Scheme;
use git_credential_azdo::git_credential::{Credential, ProtocolError};
use git_credential_azdo::secret::Secret;
use libfuzzer_sys::fuzz_target;
use std::io::BufReader;

/// The keys `read_from` understands: the only ones a `BadValue` error may name.
const KNOWN_KEYS: [&str; 15] = [
    "protocol",
    "host",
    "path",
    "username",
    "password",
    "password_expiry_utc",
    "oauth_refresh_token",
    "authtype",
    "credential",
    "ephemeral",
    "continue",
    "quit",
    "wwwauth[]",
    "capability[]",
    "state[]",
];

fn encode(cred: &Credential) -> Vec<u8> {
    let mut out = Vec::new();
    cred.write_to(&mut out)
        .expect("a description read_from accepted is encodable");
    out
}

fn check_error(e: &ProtocolError) {
    match e {
        ProtocolError::BadValue { key, .. } => assert!(
            KNOWN_KEYS.contains(&key.as_str()),
            "BadValue names a key that is not one of ours: {key:?}"
        ),
        ProtocolError::Io(e) => panic!("reading a byte slice cannot fail with I/O: {e}"),
        ProtocolError::Unencodable { .. } => panic!("read_from returned a write error"),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let parsed = Credential::read_from(data);
    // A one-byte buffer moves every line across buffer boundaries: same outcome expected.
    let unbuffered = Credential::read_from(BufReader::with_capacity(1, data));
    match (&parsed, &unbuffered) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "buffering changed the result"),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "buffering changed the error"),
        _ => panic!("buffering changed the outcome: {parsed:?} vs {unbuffered:?}"),
    }
    let cred = match parsed {
        Ok(c) => c,
        Err(e) => return check_error(&e),
    };

    let wire = encode(&cred);
    let back = match Credential::read_from(&wire[..]) {
        Ok(c) => c,
        Err(e) => panic!("re-reading our own encoding failed: {e}"),
    };
    assert_eq!(
        back, cred,
        "write_to then read_from changed the description"
    );
    assert_eq!(encode(&back), wire, "encoding is not stable");

    // The answer git gets for this request must be encodable too, either way it is given.
    for scheme in [Scheme::Basic, Scheme::Bearer] {
        let answer = cred.answer(&Secret::new("token"), 1_700_000_000, scheme);
        let answer_wire = encode(&answer);
        let answer_back = Credential::read_from(&answer_wire[..]).expect("the answer re-reads");
        assert_eq!(answer_back, answer);
    }
});
