//! `WWW-Authenticate: Bearer …` challenges as Azure DevOps sends them (and git passes on in
//! `wwwauth[]`), parsed once by RFC 7235's rules: the scheme, then comma-separated
//! `name=value` parameters, the value a token or a quoted string with `\` escapes. Parameter
//! names are case-insensitive.

use std::collections::BTreeMap;

/// The parameters of one `Bearer` challenge (names lower-cased), or `None` for another scheme.
pub fn bearer_params(challenge: &str) -> Option<BTreeMap<String, String>> {
    let challenge = challenge.trim();
    let (scheme, mut rest) = match challenge.split_once(char::is_whitespace) {
        Some((s, r)) => (s, r),
        None => (challenge, ""),
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = BTreeMap::new();
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        if rest.is_empty() {
            return Some(params);
        }
        let (name, after) = rest.split_once('=')?;
        let name = name.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let value;
        if let Some(quoted) = after.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => v.extend(chars.next().map(|(_, c)| c)),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => v.push(c),
                }
            }
            rest = &quoted[end?..];
            value = v;
        } else {
            let end = after.find(',').unwrap_or(after.len());
            value = after[..end].trim().to_string();
            rest = &after[end..];
        }
        params.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_tokens_and_quoted_strings() {
        let p = bearer_params(
            r#"Bearer realm="a, \"b\"", authorization_uri=https://login.microsoftonline.com/x , Error="insufficient_claims",claims="e30=""#,
        )
        .unwrap();
        assert_eq!(p["realm"], r#"a, "b""#);
        assert_eq!(
            p["authorization_uri"],
            "https://login.microsoftonline.com/x"
        );
        assert_eq!(p["error"], "insufficient_claims");
        assert_eq!(p["claims"], "e30=");
        assert!(bearer_params("bearer").unwrap().is_empty());
        assert_eq!(bearer_params(r#"Basic realm="x""#), None);
        assert_eq!(bearer_params(r#"Bearer realm="unterminated"#), None);
    }
}
