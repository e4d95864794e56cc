//! Fuzz target `ipc_decode`: the client ↔ daemon message decoder (`daemon_protocol::decode`,
//! `daemon_protocol::read_message`) for both `RequestEnvelope` and `Response`.
//!
//! Two passes per input. Raw: the bytes themselves are a message; nothing panics,
//! `read_message` over a reader agrees with `decode` of the first line, whatever decodes
//! re-encodes and decodes again, and no error text contains a secret-looking run of the input.
//! Structured: the bytes drive the building of a JSON message, right or wrong in shape and
//! types, that carries a marker value in its fields; no error text may contain the marker.
#![no_main]

use git_credential_azdo::daemon_protocol::{
    IpcError, RequestEnvelope, Response, decode, read_message, write_message,
};
use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};
use std::io::Cursor;

/// Stands for a token: must never appear in an error message.
const MARKER: &str = "eyJ0SECRET.hunter2-4f9c81d2";

/// Every tag of `Request` (`op`) and `Response` (`kind`).
const TAGS: &[&str] = &[
    "get",
    "erase",
    "login_start",
    "login_redirect",
    "login_wait",
    "logout",
    "status",
    "doctor",
    "ping",
    "shutdown",
    "token",
    "device_code",
    "browser_sign_in",
    "app_sign_in",
    "logged_in",
    "pong",
    "done",
    "version_mismatch",
    "error",
    MARKER,
];

/// Every field name of the messages and the structs inside them.
const FIELDS: &[&str] = &[
    "protocol",
    "version",
    "request",
    "op",
    "kind",
    "org",
    "env",
    "token",
    "wwwauth",
    "host",
    "tenant",
    "browser",
    "timeout_secs",
    "app",
    "flow",
    "url",
    "expires_at",
    "verification_uri",
    "user_code",
    "message",
    "expires_in",
    "callback",
    "listening",
    "certificate",
    "account",
    "store",
    "checks",
    "pid",
    "daemon",
    "error",
    "daemon_version",
    "orgs",
    "identity",
    "connected_at",
    "connected_by",
    "app_id",
    "access_token_expires_at",
    "last_refresh_at",
    "last_refresh_outcome",
    "refresh_token_store",
    "client_secret",
    "scope",
    "paste",
    "name",
    "upn",
    "oid",
    "ok",
    "detail",
    "fix",
    "AZURE_CLIENT_SECRET",
    "SYSTEM_ACCESSTOKEN",
    MARKER,
];

/// Maximal runs of token-like bytes (`[A-Za-z0-9._-]`, 8 or more, with a letter and a digit).
/// The decoder's own messages are words and numbers apart, so none of these can be in them
/// unless copied from the input.
fn secret_like_runs(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')))
        .filter(|run| {
            run.len() >= 8
                && run.iter().any(u8::is_ascii_alphabetic)
                && run.iter().any(u8::is_ascii_digit)
        })
}

fn assert_no_echo(e: &IpcError, data: &[u8]) {
    let text = e.to_string();
    for run in secret_like_runs(data) {
        let run = String::from_utf8_lossy(run);
        assert!(
            !text.contains(&*run),
            "error text echoes input {run:?}: {text}"
        );
    }
}

/// Decodes `data` as a `T` both ways; what decodes must re-encode and decode again.
fn raw<T: Serialize + DeserializeOwned>(data: &[u8]) {
    let decoded = decode::<T>(data);
    match &decoded {
        Ok(msg) => {
            let mut wire = Vec::new();
            write_message(&mut wire, msg).expect("a decoded message encodes");
            decode::<T>(&wire).expect("our own encoding of a decoded message decodes");
        }
        Err(e) => assert_no_echo(e, data),
    }

    // read_message takes the first line (with its newline) and decodes it.
    let first_line = match data.iter().position(|&b| b == b'\n') {
        Some(i) => &data[..=i],
        None => data,
    };
    let read = read_message::<T>(Cursor::new(data));
    match &read {
        Ok(_) => {}
        Err(IpcError::Io(e)) => panic!("reading from memory failed: {e}"),
        Err(e) => assert_no_echo(e, data),
    }
    assert_eq!(
        read.is_ok(),
        decode::<T>(first_line).is_ok(),
        "read_message and decode disagree"
    );
}

fn value(u: &mut Unstructured, depth: u32) -> ArbResult<Value> {
    Ok(match u.int_in_range(0..=9)? {
        0 | 1 => Value::String(MARKER.into()),
        2 => Value::String(format!("{}{MARKER}", u.arbitrary::<&str>()?)),
        3 => Value::from(u.arbitrary::<u64>()?),
        4 => Value::from(u.arbitrary::<i64>()?),
        5 => Value::Bool(u.arbitrary()?),
        6 => Value::Null,
        7 if depth < 3 => {
            let n = u.int_in_range(0..=3)?;
            Value::Array(
                (0..n)
                    .map(|_| value(u, depth + 1))
                    .collect::<ArbResult<_>>()?,
            )
        }
        8 if depth < 3 => Value::Object(object(u, depth + 1)?),
        _ => Value::String(u.arbitrary()?),
    })
}

fn object(u: &mut Unstructured, depth: u32) -> ArbResult<Map<String, Value>> {
    let mut map = Map::new();
    for _ in 0..u.int_in_range(0..=8)? {
        let key = (*u.choose(FIELDS)?).to_string();
        let v = match key.as_str() {
            "op" | "kind" if u.ratio(3, 4)? => Value::String((*u.choose(TAGS)?).into()),
            "protocol" if u.ratio(1, 2)? => Value::from(1),
            _ => value(u, depth)?,
        };
        map.insert(key, v);
    }
    Ok(map)
}

/// A message of roughly the right shape for either side, with the marker scattered in.
fn structured(u: &mut Unstructured) -> ArbResult<Vec<u8>> {
    let mut body = object(u, 0)?;
    if u.ratio(3, 4)? {
        let tag_key = if u.arbitrary()? { "op" } else { "kind" };
        body.insert(tag_key.into(), Value::String((*u.choose(TAGS)?).into()));
    }
    let msg = if u.arbitrary()? {
        let mut env = Map::new();
        env.insert("protocol".into(), Value::from(1));
        env.insert("version".into(), Value::String("0.1.0".into()));
        env.insert("request".into(), Value::Object(body));
        Value::Object(env)
    } else {
        Value::Object(body)
    };
    let mut bytes = serde_json::to_vec(&msg).expect("a JSON value serializes");
    if u.ratio(1, 4)? && !bytes.is_empty() {
        // Cut it short: end-of-input errors, possibly mid-way through the marker.
        let at = u.choose_index(bytes.len())?;
        bytes.truncate(at);
    }
    Ok(bytes)
}

fn no_marker<T: DeserializeOwned>(bytes: &[u8]) {
    if let Err(e) = decode::<T>(bytes) {
        let text = e.to_string();
        assert!(
            !text.contains(MARKER),
            "error text echoes a field value: {text}"
        );
        assert!(
            !text.contains("hunter2"),
            "error text echoes part of a value: {text}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    raw::<RequestEnvelope>(data);
    raw::<Response>(data);

    let mut u = Unstructured::new(data);
    if let Ok(bytes) = structured(&mut u) {
        no_marker::<RequestEnvelope>(&bytes);
        no_marker::<Response>(&bytes);
    }
});
