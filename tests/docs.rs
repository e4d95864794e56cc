//! The build-agent pages of docs/agents/, tried as a new user would: each page's script runs
//! as written (the install line aside) under the variables its platform sets, with a real git
//! and the real daemon, against local stand-ins for the platform, Entra ID and Azure DevOps.
//! Each page's first "When it fails" message is then provoked and must be what git shows.
//! docs/security.md names only tests that exist.

mod common;

use common::MockEntra;
use common::harness::{World, text};
use common::imds::MockImds;
use common::oidc::{federated_jwt, oidc_provider};
use std::path::Path;
use std::process::Output;

const APP: &str = "3f2a9c1e-7b4d-4e8f-9a61-0c5d2e7b8a94";
const CONNECTION: &str = "c0ffee00-0000-4000-8000-00000000abcd";

fn page(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/agents")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The agent's script of a page: the `run: |` / `script: |` block of its YAML, else the
/// ```sh block that sets the helper up.
fn script(doc: &str) -> String {
    let lines: Vec<&str> = doc.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    if let Some(i) = lines
        .iter()
        .position(|l| l.trim_end().ends_with("run: |") || l.trim_end().ends_with("script: |"))
    {
        // The block scalar: lines indented past its key, blank lines included.
        let key = lines[i].find(|c: char| c.is_ascii_alphabetic()).unwrap();
        let body: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|l| l.trim().is_empty() || indent(l) > key)
            .copied()
            .collect();
        let least = body
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| indent(l))
            .min()
            .unwrap();
        return body
            .iter()
            .map(|l| format!("{}\n", l.get(least..).unwrap_or("")))
            .collect();
    }
    let blocks: Vec<&str> = doc.split("```").collect();
    let block = blocks
        .iter()
        .find(|b| b.starts_with("sh\n") && b.contains("git-credential-azdo setup"))
        .expect("a ```sh block that runs setup");
    block.trim_start_matches("sh\n").to_string()
}

/// `KEY: value` lines of the page's YAML `env:`/`variables:` blocks.
fn yaml_env(doc: &str) -> Vec<(String, String)> {
    doc.lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(": ")?;
            let var = k.chars().all(|c| c.is_ascii_uppercase() || c == '_') && k.len() > 3;
            var.then(|| (k.to_string(), v.trim().to_string()))
        })
        .collect()
}

/// The first message under "## When it fails", up to its first ellipsis.
fn first_documented_failure(doc: &str) -> String {
    let section = doc
        .split("## When it fails")
        .nth(1)
        .expect("a failures section");
    let quoted = section.split('`').nth(1).expect("a quoted message");
    one_line(quoted.split('…').next().unwrap())
}

/// Whitespace runs as single spaces (the docs wrap long messages).
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A repository at the page's address, with one commit, and the script pointed at it.
fn prepare(w: &World, doc: &str, fill: &[(&str, &str)]) -> (String, Vec<(String, String)>) {
    let url = w.ado.create_repo("contoso", "web", "site");
    let bare = w.ado.root().join("contoso/web/_git/site");
    let seed = w.path("seed");
    let git = |args: &[&str], cwd: &Path| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(cwd)
            .env("HOME", w.path("home"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    git(
        &["init", "-q", "-b", "main", seed.to_str().unwrap()],
        w.dir.path(),
    );
    std::fs::write(seed.join("README.md"), "site\n").unwrap();
    git(&["add", "."], &seed);
    git(&["commit", "-qm", "first"], &seed);
    git(&["push", "-q", bare.to_str().unwrap(), "main"], &seed);

    let mut s = script(doc)
        .lines()
        .filter(|l| !l.trim_start().starts_with("cargo install"))
        .collect::<Vec<_>>()
        .join("\n");
    s = s.replace("https://dev.azure.com/contoso/web/_git/site", &url);
    let mut env = yaml_env(doc);
    for (placeholder, value) in fill {
        s = s.replace(placeholder, value);
        for (_, v) in env.iter_mut() {
            *v = v.replace(placeholder, value);
        }
    }
    let placeholder = |l: &str| {
        l.split('<')
            .skip(1)
            .any(|r| r.starts_with(char::is_lowercase))
    };
    let unfilled = s
        .lines()
        .any(|l| placeholder(l) && !l.trim_start().starts_with('#'));
    assert!(!unfilled, "a placeholder is left in the script: {s}");
    (s, env)
}

/// Runs the script the way a CI step does (`bash -e`), in a fresh clone directory, with the
/// configuration the user's home would start with: the mock's host listed, and what stands in
/// for the machine's own setup (the mocks' authority, their CA as the trust store would hold
/// it, and a dead proxy for anything that is not on loopback).
fn run(w: &World, script: &str, env: &[(String, String)]) -> Output {
    let home = w.path("home");
    let cfg = home.join(".config/git-credential-azdo");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(
        cfg.join("config.toml"),
        format!(
            "hosts = [\"{}\"]\nauthority_host = \"{}\"\nssl_cert_file = \"{}\"\nproxy = \"http://127.0.0.1:9\"\nno_proxy = \"127.0.0.1,localhost\"\n",
            w.ado.host(),
            w.entra.url(),
            w.ca.ca_path().display()
        ),
    )
    .unwrap();
    let work = w.path("job");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let mut c = w.command("bash");
    c.args(["-e", "-c", script])
        .current_dir(&work)
        .env("XDG_CONFIG_HOME", home.join(".config"));
    for (k, v) in env {
        c.env(k, v);
    }
    common::harness::run_with_input(&mut c, b"")
}

fn assert_cloned(w: &World, out: &Output) {
    assert!(
        out.status.success(),
        "the page's script failed:\n{}\n{}",
        text(&out.stderr),
        w.log()
    );
    assert!(text(&out.stdout).contains("first"), "{}", text(&out.stdout));
    assert_eq!(w.entra.stats().devicecode_requests, 0, "nobody signed in");
}

fn assert_documented_failure(doc: &str, out: &Output) {
    let expected = first_documented_failure(doc);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "should fail: {err}");
    assert!(
        one_line(&err).contains(&expected),
        "git should show the documented message {expected:?}:\n{err}"
    );
}

#[test]
fn github_actions_page() {
    let mut w = World::new();
    let doc = page("github-actions.md");
    let sub = "repo:contoso/web:ref:refs/heads/main";
    w.entra.add_federated_app(APP, sub);
    let (gh, _seen) = oidc_provider(&w, "gh-request-token", sub, |jwt| {
        format!(r#"{{"count":1,"value":"{jwt}"}}"#)
    });
    let fill = [
        ("<tenant id>", MockEntra::HOME_TENANT),
        ("<app client id>", APP),
    ];
    let (s, env) = prepare(&w, &doc, &fill);
    w.set_env("XDG_CONFIG_HOME", w.path("home/.config").to_str().unwrap());
    // Without `id-token: write`, GitHub sets no OIDC variables.
    assert_documented_failure(&doc, &run(&w, &s, &env));
    let mut env = env;
    env.push((
        "ACTIONS_ID_TOKEN_REQUEST_URL".into(),
        format!("https://{}/_apis/oidctoken?api-version=2.0", gh.addr()),
    ));
    env.push((
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN".into(),
        "gh-request-token".into(),
    ));
    assert_cloned(&w, &run(&w, &s, &env));
}

#[test]
fn azure_pipelines_page() {
    let mut w = World::new();
    let doc = page("azure-pipelines.md");
    let sub = "sc://contoso/web/agents";
    w.entra.add_federated_app(APP, sub);
    let (oidc, _seen) = oidc_provider(&w, "job-access-token", sub, |jwt| {
        format!(r#"{{"oidcToken":"{jwt}"}}"#)
    });
    let fill = [
        ("<tenant id>", MockEntra::HOME_TENANT),
        ("<app client id>", APP),
        ("<connection id>", CONNECTION),
        ("$(System.AccessToken)", "job-access-token"),
    ];
    let (s, env) = prepare(&w, &doc, &fill);
    w.set_env("XDG_CONFIG_HOME", w.path("home/.config").to_str().unwrap());
    w.set_env(
        "SYSTEM_OIDCREQUESTURI",
        &format!(
            "https://{}/contoso/_apis/distributedtask/hubs/build/plans/p/jobs/j/oidctoken",
            oidc.addr()
        ),
    );
    // A step without the env mapping.
    let unmapped: Vec<_> = env
        .iter()
        .filter(|(k, _)| k != "SYSTEM_ACCESSTOKEN")
        .cloned()
        .collect();
    assert_documented_failure(&doc, &run(&w, &s, &unmapped));
    assert_cloned(&w, &run(&w, &s, &env));
}

#[test]
fn aks_page() {
    let mut w = World::new();
    let doc = page("aks.md");
    let sub = "system:serviceaccount:build:agent";
    w.entra.add_federated_app(APP, sub);
    let token_file = w.path("azure-identity-token");
    std::fs::write(&token_file, federated_jwt(sub)).unwrap();
    let (s, _) = prepare(&w, &doc, &[]);
    w.set_env("XDG_CONFIG_HOME", w.path("home/.config").to_str().unwrap());
    // A pod the webhook did not mutate.
    assert_documented_failure(&doc, &run(&w, &s, &[]));
    // What the webhook injects.
    let entra_url = w.entra.url();
    let env = [
        ("AZURE_TENANT_ID", MockEntra::HOME_TENANT),
        ("AZURE_CLIENT_ID", APP),
        ("AZURE_AUTHORITY_HOST", entra_url.as_str()),
        ("AZURE_FEDERATED_TOKEN_FILE", token_file.to_str().unwrap()),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    assert_cloned(&w, &run(&w, &s, &env));
}

#[test]
fn azure_vm_page() {
    let mut w = World::new();
    let doc = page("azure-vm.md");
    let imds = MockImds::start(&w.entra);
    let (s, _) = prepare(&w, &doc, &[]);
    w.set_env("XDG_CONFIG_HOME", w.path("home/.config").to_str().unwrap());
    // Not an Azure machine: nothing answers at the metadata address.
    let nowhere = [(
        "AZURE_POD_IDENTITY_AUTHORITY_HOST".to_string(),
        "http://127.0.0.1:9".to_string(),
    )];
    assert_documented_failure(&doc, &run(&w, &s, &nowhere));
    let env = [("AZURE_POD_IDENTITY_AUTHORITY_HOST".to_string(), imds.url())];
    assert_cloned(&w, &run(&w, &s, &env));
    assert!(imds.served() >= 1);
}

/// Every test the security model cites (`file::name`, or `file::*` for a whole file) exists.
#[test]
fn security_md_cites_only_tests_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/security.md")).unwrap();
    let table = doc
        .split("## What the tests prove")
        .nth(1)
        .expect("a test table");
    let mut cited = 0;
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let first = row.split('|').nth(1).unwrap();
        for name in first.split('`').skip(1).step_by(2) {
            let Some((file, test)) = name.split_once("::") else {
                continue;
            };
            let path = root.join("tests").join(format!("{file}.rs"));
            let Ok(source) = std::fs::read_to_string(&path) else {
                // `git_credential`, `daemon_protocol`...: unit tests in src/.
                assert!(
                    root.join("src").join(format!("{file}.rs")).exists(),
                    "{name}: no tests/{file}.rs or src/{file}.rs"
                );
                continue;
            };
            if test != "*" {
                assert!(
                    source.contains(&format!("fn {test}(")),
                    "docs/security.md cites {name}, which tests/{file}.rs does not have"
                );
            }
            cited += 1;
        }
    }
    assert!(cited >= 15, "only {cited} tests cited");
}

/// docs/configuration.md names every setting of the configuration file and every environment
/// variable the code reads.
#[test]
fn configuration_md_names_every_setting_and_variable() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    let config = std::fs::read_to_string(root.join("src/config.rs")).unwrap();
    let mut missing = Vec::new();
    // Fields of the file's structs, as `name` in the document.
    for strukt in [
        "pub struct Config {",
        "pub struct OrgConfig {",
        "pub struct IdentityConfig {",
    ] {
        let body = config.split(strukt).nth(1).expect(strukt);
        let body = &body[..body.find("\n}").unwrap()];
        for line in body.lines() {
            let Some(field) = line.trim().strip_prefix("pub ") else {
                continue;
            };
            let name = field.split(':').next().unwrap().trim();
            let named = [
                format!("`{name}`"),
                format!("{name}`"),
                format!("`[{name}."),
            ];
            if !named.iter().any(|n| doc.contains(n.as_str())) {
                missing.push(format!("setting {name}"));
            }
        }
    }
    // Every SCREAMING_CASE string in the source names a variable (none is anything else).
    let sources = rust_sources(root, "src", false);
    let mut variables = std::collections::BTreeSet::new();
    for (_, src) in &sources {
        for piece in src.split('"').skip(1).step_by(2) {
            let looks = piece.len() > 3
                && piece.contains('_')
                && piece
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                && !piece.starts_with("CARGO_");
            if looks {
                variables.insert(piece.to_string());
            }
        }
    }
    assert!(variables.len() > 20, "{variables:?}");
    for v in variables {
        if !doc.contains(&format!("`{v}")) {
            missing.push(format!("variable {v}"));
        }
    }
    assert!(
        missing.is_empty(),
        "docs/configuration.md lacks: {missing:?}"
    );
}

/// A message the source can show the user: its template as written (format placeholders
/// included) and where it is.
struct Template {
    at: String,
    text: String,
}

/// Every `.rs` file under `dir`, as (path relative to the crate, text). With `cut_tests`, test
/// modules (`#[cfg(test)]` followed by `mod`) are cut off: their strings are never shown.
fn rust_sources(root: &Path, dir: &str, cut_tests: bool) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut dirs = vec![root.join(dir)];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let mut text = std::fs::read_to_string(&p).unwrap();
                if let Some(i) = text.find("\n#[cfg(test)]\nmod ").filter(|_| cut_tests) {
                    text.truncate(i + 1);
                }
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                files.push((rel, text));
            }
        }
    }
    files.sort();
    files
}

/// The Rust string literal that `s` starts with (after whitespace), unescaped (`\"`, `\\`,
/// `\n`, `\t`, a `\` that continues the line), with the byte offset it starts at; `None`
/// when `s` does not start with a plain literal (a variable, `e.to_string()`...).
fn string_literal(s: &str) -> Option<(usize, String)> {
    let start = s.len() - s.trim_start().len();
    let mut chars = s[start..].strip_prefix('"')?.chars();
    let mut out = String::new();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some((start, out)),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                '\n' => {
                    // Line continuation: the next line's leading whitespace is not part of it.
                    let rest = chars.as_str().trim_start();
                    chars = rest.chars();
                }
                other => out.push(other), // `\"`, `\\`, `\'`
            },
            c => out.push(c),
        }
    }
    None
}

/// The message templates of the source, gathered by a plain text scan (no parser). A call is
/// found by its tokens, any whitespace (newlines too) between them:
/// - the literal of every `#[error("…")]` (not `transparent`), anywhere under src/;
/// - in src/daemon and src/client, the first literal of `Error::Usage(…)`, `Error::daemon(…)`
///   (its context), `err(ErrorKind::X, …)`, `Response::error(ErrorKind::X, …)`, a sign-in's
///   outcome `(ErrorKind::X, …)`, `SourceError::X(…)` (why a token source gave no token),
///   `message: …` and `fix: Some(…)`, directly or as `format!("…"`;
/// - in src/client, the lines the client writes itself: `writeln!(err, "{NAME}: …")`.
///
/// A call whose message is a variable (`e.to_string()`, `why`) yields nothing: its text is a
/// literal somewhere else, or comes from a library.
fn message_templates(root: &Path) -> Vec<Template> {
    /// Where `tokens` follow each other from the start of `s` (whitespace between them), an
    /// `X` token standing for an identifier: the rest of `s` after them.
    fn after_tokens<'a>(mut s: &'a str, tokens: &[&str]) -> Option<&'a str> {
        for t in tokens {
            s = s.trim_start();
            s = match *t {
                "X" => s.trim_start_matches(|c: char| c.is_ascii_alphanumeric() || c == '_'),
                t => s.strip_prefix(t)?,
            };
        }
        Some(s)
    }
    const DAEMON_AND_CLIENT: &[&str] = &["src/daemon", "src/client"];
    const CLIENT: &[&str] = &["src/client"];
    // Each call: its tokens (the first is searched for as a word, the others must follow it),
    // and the directories where it counts. A `format!(` may come between them and the literal.
    let calls: [(&[&str], &[&str]); 10] = [
        (&["#[error("], &["src"]),
        (&["Error::Usage("], CLIENT),
        (&["Error::daemon("], CLIENT),
        (&["err(", "ErrorKind::", "X", ","], DAEMON_AND_CLIENT),
        (
            &["Response::error(", "ErrorKind::", "X", ","],
            DAEMON_AND_CLIENT,
        ),
        // `(` as a word: the tuple itself, not a call (`err(`, caught above).
        (&["(", "ErrorKind::", "X", ","], DAEMON_AND_CLIENT),
        (&["SourceError::", "X", "("], DAEMON_AND_CLIENT),
        (&["message:"], DAEMON_AND_CLIENT),
        (&["fix:", "Some("], DAEMON_AND_CLIENT),
        (&["writeln!(", "err", ","], CLIENT),
    ];
    let mut found = Vec::new();
    for (file, text) in rust_sources(root, "src", true) {
        for (tokens, scope) in calls {
            if !scope.iter().any(|dir| file.starts_with(dir)) {
                continue;
            }
            for (i, _) in text.match_indices(tokens[0]) {
                // A word: `err(`, not the end of `map_err(`.
                let word = text[..i]
                    .chars()
                    .next_back()
                    .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
                let Some(rest) = after_tokens(&text[i..], tokens).filter(|_| word) else {
                    continue;
                };
                let rest = after_tokens(rest, &["format!("]).unwrap_or(rest);
                let Some((at, literal)) = string_literal(rest) else {
                    continue;
                };
                if tokens[0] == "writeln!(" && !literal.starts_with("{NAME}: ") {
                    continue;
                }
                let offset = text.len() - rest.len() + at;
                let line = text[..offset].matches('\n').count() + 1;
                found.push((file.clone(), line, literal));
            }
        }
    }
    found.sort();
    found
        .into_iter()
        .map(|(file, line, text)| Template {
            at: format!("{file}:{line}"),
            text,
        })
        .collect()
}

/// The pieces of a template between its format placeholders (`{…}`; `{{` and `}}` are
/// literal braces).
fn fixed_pieces(template: &str) -> Vec<String> {
    let mut pieces = vec![String::new()];
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                pieces.last_mut().unwrap().push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                pieces.last_mut().unwrap().push('}');
            }
            '{' => {
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                }
                pieces.push(String::new());
            }
            c => pieces.last_mut().unwrap().push(c),
        }
    }
    pieces
}

/// Text as the comparison sees it: markdown backticks gone (the doc quotes messages in them,
/// and a few messages hold some), whitespace runs as one space.
fn as_compared(s: &str) -> String {
    one_line(&s.replace('`', ""))
}

/// docs/troubleshooting.md quotes every message the user can see: the display string of each
/// error type, and the messages the daemon and the client build (see [`message_templates`]).
/// Someone who searches the page for the line git showed them must find it, with its cause and
/// fix; so a new message fails here until the page has a row for it. Each template is looked
/// for by its longest fixed piece between placeholders; pieces under 12 characters say too
/// little to look for ("{service} said {error}").
#[test]
fn troubleshooting_md_quotes_every_message() {
    const SHORTEST: usize = 12;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/troubleshooting.md")).unwrap();
    let doc = as_compared(&doc);
    let templates = message_templates(root);
    assert!(
        templates.len() > 60,
        "only {} message templates found: has the source's shape changed?",
        templates.len()
    );
    let (mut ignored, mut missing) = (Vec::new(), Vec::new());
    for t in &templates {
        let longest = fixed_pieces(&t.text)
            .into_iter()
            .map(|p| as_compared(&p))
            .max_by_key(|p| p.chars().count())
            .unwrap_or_default();
        if longest.chars().count() < SHORTEST {
            ignored.push(format!("{}: {:?}", t.at, t.text));
        } else if !doc.contains(&longest) {
            missing.push(format!("{}: {longest:?}", t.at));
        }
    }
    println!(
        "{} message templates; {} ignored as too short or only placeholders:",
        templates.len(),
        ignored.len()
    );
    for i in &ignored {
        println!("  {i}");
    }
    assert!(
        missing.is_empty(),
        "docs/troubleshooting.md does not quote {} of {} messages:\n{}",
        missing.len(),
        templates.len(),
        missing.join("\n")
    );
}
