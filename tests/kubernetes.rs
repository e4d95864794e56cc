//! packaging/kubernetes/, tried on this machine: the manifests pass a strict schema
//! validation (kubernetes-validate, offline, Kubernetes 1.30), and the pod they describe is run
//! as two real processes: the daemon as the sidecar runs it, and git as the agent container
//! runs it, each with the manifest's own command, variables and files (paths mapped into a
//! temporary directory, the Azure DevOps host mapped to the mock), plus what the workload
//! identity webhook injects. The agent's clone is served by the sidecar's daemon through the
//! shared socket, with a federated token from the projected file, which is re-read when the
//! kubelet rotates it.

mod common;

use common::requires::{Piece, require};

use common::MockEntra;
use common::harness::{World, text};
use common::oidc::federated_jwt;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const CLIENT_ID: &str = "7c0de1a2-b3c4-4d5e-8f90-a1b2c3d4e5f6";
const SUBJECT: &str = "system:serviceaccount:build:azdo-agent";

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/kubernetes")
}

fn validate(files: &[PathBuf]) -> std::process::Output {
    Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "-k", "1.30.0"])
        .args(files)
        .output()
        .expect("python3 with kubernetes-validate (pip install kubernetes-validate; .ci/run does)")
}

#[test]
fn the_manifests_pass_strict_schema_validation() {
    if !require(
        &[Piece::KubernetesValidate],
        "the Kubernetes manifests against the schemas",
    ) {
        return;
    }
    let files: Vec<PathBuf> = ["serviceaccount.yaml", "configmap.yaml", "agent.yaml"]
        .iter()
        .map(|f| manifests().join(f))
        .collect();
    let out = validate(&files);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // And it can fail: a misspelt field is refused.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("agent.yaml");
    let yaml = std::fs::read_to_string(&files[2]).unwrap();
    std::fs::write(
        &bad,
        yaml.replace("restartPolicy: Always", "restartPolicyy: Always"),
    )
    .unwrap();
    assert!(!validate(&[bad]).status.success());
}

/// A manifest file as JSON (PyYAML, which kubernetes-validate brings).
fn load(file: &str) -> Value {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(manifests().join(file))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod[list]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {list} {name}"))
}

fn env_of(c: &Value) -> Vec<(String, String)> {
    c["env"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|v| {
                    let k = v["name"].as_str().unwrap().to_string();
                    (k, v["value"].as_str().unwrap().to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_pod_runs_here_and_the_agent_clones_through_the_sidecar() {
    if !require(
        &[Piece::KubernetesValidate],
        "the sidecar pod run here (its YAML read with PyYAML)",
    ) {
        return;
    }
    let w = World::new();
    w.entra.add_federated_app(CLIENT_ID, SUBJECT);
    // Short tokens, so that the rotation below is seen within the test.
    w.entra.set_token_lifetime(Duration::from_secs(6));
    let root = w.path("pod");
    // The pod's paths, inside the temporary directory.
    let map = |p: &str| -> String {
        for prefix in ["/run/azdo", "/etc/azdo", "/opt/azdo/bin", "/tmp/azdo-home"] {
            if let Some(rest) = p.strip_prefix(prefix) {
                return format!("{}{prefix}{rest}", root.display());
            }
        }
        p.to_string()
    };
    for d in ["/run/azdo", "/etc/azdo", "/opt/azdo/bin", "/tmp/azdo-home"] {
        std::fs::create_dir_all(map(d)).unwrap();
    }
    // The ConfigMap's files, with dev.azure.com mapped to the mock.
    let cm = load("configmap.yaml");
    let host = w.ado.host();
    let config = cm["data"]["config.toml"].as_str().unwrap();
    std::fs::write(
        map("/etc/azdo/config.toml"),
        format!("hosts = [\"{host}\"]\n{config}"),
    )
    .unwrap();
    let gitconfig = cm["data"]["gitconfig"]
        .as_str()
        .unwrap()
        .replace("https://dev.azure.com", &format!("https://{host}"))
        .replace("/opt/azdo/bin", &map("/opt/azdo/bin"));
    std::fs::write(map("/etc/azdo/gitconfig"), gitconfig).unwrap();
    // The install-helper init container's copy.
    for exe in [
        env!("CARGO_BIN_EXE_git-credential-azdo"),
        env!("CARGO_BIN_EXE_git-credential-azdo-daemon"),
    ] {
        let name = Path::new(exe).file_name().unwrap();
        std::fs::copy(exe, Path::new(&map("/opt/azdo/bin")).join(name)).unwrap();
    }
    // What the workload identity webhook injects into every container.
    let token_file = w.path("azure-identity-token");
    std::fs::write(&token_file, federated_jwt(SUBJECT)).unwrap();
    let webhook = [
        ("AZURE_CLIENT_ID", CLIENT_ID.to_string()),
        ("AZURE_TENANT_ID", MockEntra::HOME_TENANT.to_string()),
        (
            "AZURE_FEDERATED_TOKEN_FILE",
            token_file.display().to_string(),
        ),
    ];

    let deployment = load("agent.yaml");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "azdo-agent");
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"],
        "true"
    );
    let sidecar = container(pod, "initContainers", "azdo-daemon");
    assert_eq!(sidecar["restartPolicy"], "Always", "a native sidecar");
    let agent = container(pod, "containers", "agent");

    // The sidecar, as its command and variables say.
    let command = sidecar["command"][0].as_str().unwrap();
    assert_eq!(command, "/usr/bin/git-credential-azdo-daemon");
    let mut daemon = w.command(env!("CARGO_BIN_EXE_git-credential-azdo-daemon"));
    let args = sidecar["command"].as_array().unwrap()[1..].iter();
    daemon.args(args.map(|a| a.as_str().unwrap()));
    assert_eq!(
        sidecar["command"][1], "--service",
        "the sidecar is a service"
    );
    for (k, v) in env_of(sidecar) {
        daemon.env(k, map(&v));
    }
    for (k, v) in &webhook {
        daemon.env(k, v);
    }
    let mut daemon = daemon
        .env_remove("XDG_DATA_HOME")
        .env_remove("XDG_STATE_HOME")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(w.path("sidecar.log")).unwrap())
        .spawn()
        .unwrap();
    // Its startup probe.
    let probe = sidecar["startupProbe"]["exec"]["command"][2]
        .as_str()
        .unwrap();
    let socket = PathBuf::from(map(probe));
    assert!(
        common::harness::wait_until(Duration::from_secs(10), || socket.exists()),
        "the sidecar's socket {}",
        socket.display()
    );

    // The agent: git, with the manifest's variables and the webhook's.
    let url = w.ado.create_repo("contoso", "web", "site");
    let git = |args: &[&str]| {
        let mut c = w.command("git");
        c.args(args).current_dir(&root);
        for (k, v) in env_of(agent) {
            c.env(k, map(&v));
        }
        for (k, v) in &webhook {
            c.env(k, v);
        }
        c.env_remove("GIT_CONFIG_NOSYSTEM")
            .env("HOME", map("/tmp/azdo-home"));
        c.output().unwrap()
    };
    let out = git(&["clone", &url, "work"]);
    assert!(out.status.success(), "clone: {}", text(&out.stderr));
    // Served by the sidecar: the pid file names it, and no other daemon started.
    let pid_file = socket.with_file_name("daemon.pid");
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, daemon.id(), "the sidecar answered");
    assert!(w.entra.stats().client_credentials_ok >= 1);
    // The kubelet rotates the projected token file, and the daemon reads it at every exchange:
    // with a token of a subject Entra does not know, the next exchange (once the held token
    // has expired) is refused, and git says so ...
    let fetch = || git(&["-C", "work", "fetch"]);
    std::fs::write(&token_file, federated_jwt("system:serviceaccount:other:sa")).unwrap();
    std::thread::sleep(Duration::from_secs(7));
    let refused = fetch();
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("AADSTS700213"),
        "{}",
        text(&refused.stderr)
    );
    // ... and with the next good one, git works again, nothing restarted.
    std::fs::write(&token_file, federated_jwt(SUBJECT)).unwrap();
    assert!(
        common::harness::wait_until(Duration::from_secs(30), || fetch().status.success()),
        "{}",
        std::fs::read_to_string(w.path("sidecar.log")).unwrap_or_default()
    );
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        daemon.id().to_string()
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
}
