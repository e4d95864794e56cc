//! The hosts a token may be answered for, written from the specification and independently of
//! `src/policy.rs`, so that the property tests (`tests/codec_props.rs`) and the fuzz target
//! (`fuzz/fuzz_targets/host_policy.rs`) judge the code rather than repeat it: `dev.azure.com`,
//! one label before `.visualstudio.com` (an organization name: up to 50 letters, digits, `-`
//! or `_`), either with an optional `:443`, ASCII case aside; and the hosts the user lists.

/// Whether a token may go to `host` with `listed` configured.
pub fn may_answer(host: &str, listed: &[String]) -> bool {
    if listed.iter().any(|l| l.eq_ignore_ascii_case(host)) {
        return true;
    }
    let host = host.to_ascii_lowercase();
    let name = host.strip_suffix(":443").unwrap_or(&host);
    if name == "dev.azure.com" {
        return true;
    }
    name.strip_suffix(".visualstudio.com")
        .is_some_and(organization)
}

/// An Azure DevOps organization name: 1 to 50 letters, digits, `-` or `_`, not starting or
/// ending with `-`.
pub fn organization(name: &str) -> bool {
    (1..=50).contains(&name.len())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `host` is one of those served without any configuration.
pub fn built_in(host: &str) -> bool {
    may_answer(host, &[])
}
