//! Fleet simulation: N build agents, each a real daemon process with its own runtime and data
//! directories and a service principal (the same Entra load as workload identity), against
//! one mock Entra ID, over a simulated day with time scaled 1/SCALE. Each agent runs clones at
//! random (each clone one `get` over the agent's socket) and tokens live 60–90 minutes,
//! drawn per token as Entra does.
//!
//! ```sh
//! cargo test --release --test fleet -- --ignored --nocapture
//! ```
//!
//! Settings (environment): FLEET_AGENTS (200), FLEET_SCALE (240: a day in 6 minutes),
//! FLEET_HOURS (24), FLEET_CLONES_PER_HOUR per agent (6), FLEET_COMPARE_HOURS (3, for the
//! jitter comparison). The agents' daemons run in this process through `daemon::run`, each on
//! its own socket, all on one `Clock::fast(SCALE)`: the daemon's schedule runs SCALE times
//! faster, tokens live their real 60–90 minutes of the clock's time. (Entra's `exp` claims are
//! set a few days ahead: they would otherwise read in real time, behind the fast clock.)
//!
//! It prints, beside a fetch-a-token-per-clone approach (one Entra request per clone):
//! Entra requests per agent per token lifetime, the peak rate the fleet puts on Entra, and the
//! clones that waited on a refresh. Then it runs the same fleet with every token living 75
//! minutes, with and without the refresh jitter, and compares the peaks of the refresh waves.

mod common;

use common::MockEntra;
use common::harness::World;
use git_credential_azdo::config::Config;
use git_credential_azdo::daemon::{self, Settings, Stores, clock::Clock};
use git_credential_azdo::daemon_protocol::{self, Request, RequestEnvelope, Response};
use git_credential_azdo::secret::Secret;
use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// Agent `i`'s service principal: one app per agent, so that Entra's log tells them apart.
fn app(i: usize) -> String {
    format!("5d1c7a2e-3b4f-4c6d-8e9f-{i:012x}")
}
const SECRET: &str = "fleet-client-secret-value";

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One build agent: a daemon of its own, on the fleet's runtime.
struct Agent {
    socket: PathBuf,
}

/// Counts the daemons' "get waits for a refresh" events (every agent logs into this process).
static WAITS: AtomicUsize = AtomicUsize::new(0);

struct CountWaits;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountWaits {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(bool);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" && format!("{v:?}").contains("get waits for a refresh") {
                    self.0 = true;
                }
            }
        }
        let mut m = Message(false);
        event.record(&mut m);
        if m.0 {
            WAITS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn count_waits() {
    use tracing_subscriber::layer::SubscriberExt;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let subscriber = tracing_subscriber::registry()
            .with(CountWaits)
            .with(tracing_subscriber::filter::LevelFilter::INFO);
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
}

fn start_agent(
    w: &World,
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    i: usize,
    clock: &Clock,
    shutdown: &CancellationToken,
) -> Agent {
    let home = dir.join(format!("agent-{i}"));
    for d in ["run", "data"] {
        std::fs::create_dir_all(home.join(d)).unwrap();
    }
    // The world's configuration (the mocks' authority, CA and dead proxy) with a memory store
    // and a service principal for every organization.
    let world = std::fs::read_to_string(w.config_path()).unwrap();
    let world: String = world
        .lines()
        .filter(|l| !l.starts_with("store") && !l.starts_with("hosts"))
        .map(|l| format!("{l}\n"))
        .collect();
    let config = home.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"memory\"\nidentity = \"ci\"\n{world}[identities.ci]\nkind = \"service-principal\"\n"
        ),
    )
    .unwrap();
    let settings = Settings {
        config: Config::load(&config).unwrap(),
        service_identity: Default::default(),
    };
    let socket = home.join("run/daemon.sock");
    let (clock, shutdown, data) = (clock.clone(), shutdown.clone(), home.join("data"));
    let listener = {
        let _rt = rt.enter();
        daemon::bind(&socket).unwrap()
    };
    rt.spawn(async move {
        let stores = Stores::open(&settings.config, data).await.unwrap();
        daemon::run(listener, stores, settings, clock, shutdown)
            .await
            .unwrap();
    });
    Agent { socket }
}

/// The request a clone's `get` makes, with the agent's service-principal variables.
fn get_line(app: &str) -> Vec<u8> {
    let env: BTreeMap<String, Secret> = [
        ("AZURE_TENANT_ID", MockEntra::HOME_TENANT),
        ("AZURE_CLIENT_ID", app),
        ("AZURE_CLIENT_SECRET", SECRET),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Secret::new(v)))
    .collect();
    let req = RequestEnvelope {
        protocol: daemon_protocol::PROTOCOL,
        version: daemon_protocol::PACKAGE_VERSION.into(),
        request: Request::Get {
            org: "contoso".into(),
            env,
            authtype: false,
            git: None,
        },
    };
    let mut line = Vec::new();
    daemon_protocol::write_message(&mut line, &req).unwrap();
    line
}

fn clone_get(socket: &Path, line: &[u8]) -> bool {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    if s.write_all(line).is_err() {
        return false;
    }
    matches!(
        daemon_protocol::read_message::<Response>(BufReader::new(&s)),
        Ok(Response::Token { .. })
    )
}

/// A small deterministic generator (xorshift), so that runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    /// An exponential wait with this mean (Poisson arrivals).
    fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.next()).ln()
    }
}

struct Outcome {
    agents: usize,
    scale: f64,
    wall: Duration,
    clones: usize,
    failed_clones: usize,
    /// Clones that waited on a refresh, each agent's first (no token yet) included.
    waited: usize,
    /// Each token request: simulated seconds from the start, and the token's lifetime
    /// (`expires_in`, which the daemon goes by here), in simulated seconds.
    requests: Vec<(f64, f64)>,
    /// For each agent's consecutive token requests: the first token's lifetime divided by the
    /// time until the next request, i.e. requests per token lifetime in steady state.
    per_lifetime: Vec<f64>,
    /// Simulated seconds from the start of each clone.
    clone_times: Vec<f64>,
}

fn run_fleet(
    agents: usize,
    scale: u64,
    hours: f64,
    clones_per_hour: f64,
    lifetimes_min: (u64, u64),
    jitter: bool,
) -> Outcome {
    let w = World::new();
    for i in 0..agents {
        w.entra.add_app(&app(i), Some(SECRET));
    }
    let s = |min: u64| Duration::from_secs(min * 60);
    w.entra
        .set_token_lifetime_range(s(lifetimes_min.0), s(lifetimes_min.1));
    // `exp` beyond what the fast clock reaches: the daemon goes by `expires_in`.
    w.entra.set_claims_clock_offset(3 * 86_400);
    count_waits();
    WAITS.store(0, Ordering::Relaxed);
    let clock = match jitter {
        true => Clock::fast(scale as u32),
        false => Clock::fast(scale as u32).with_fixed_jitter(0.5),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let shutdown = CancellationToken::new();
    let dir = w.path("fleet");
    // Started together, as a scale set or a node pool coming up.
    let fleet: Vec<Agent> = (0..agents)
        .map(|i| start_agent(&w, &rt, &dir, i, &clock, &shutdown))
        .collect();
    let day = Duration::from_secs_f64(hours * 3600.0 / scale as f64);
    // Mean real seconds between one agent's clones.
    let mean_gap = 3600.0 / clones_per_hour / scale as f64;
    let start = Instant::now();
    let started = SystemTime::now();
    let results: Vec<(Vec<f64>, usize)> = std::thread::scope(|sc| {
        let hs: Vec<_> = fleet
            .iter()
            .enumerate()
            .map(|(i, agent)| {
                let line = get_line(&app(i));
                sc.spawn(move || {
                    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((i as u64 + 1) * 0x1000_0001));
                    let (mut times, mut failed) = (Vec::new(), 0);
                    // Every agent's first job starts with the fleet.
                    let mut at = 0.0;
                    while at < day.as_secs_f64() {
                        let due = start + Duration::from_secs_f64(at);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        let t = start.elapsed().as_secs_f64();
                        if !clone_get(&agent.socket, &line) {
                            failed += 1;
                        }
                        times.push(t * scale as f64);
                        at += rng.exp(mean_gap);
                    }
                    (times, failed)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wall = start.elapsed();
    let waited = WAITS.load(Ordering::Relaxed);
    shutdown.cancel();
    rt.shutdown_timeout(Duration::from_secs(10));
    let stats = w.entra.stats();
    let mut by_agent: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for r in &stats.token_requests {
        if r.grant_type != "client_credentials" || r.at < started || r.status != 200 {
            continue;
        }
        let t = r.at.duration_since(started).unwrap().as_secs_f64() * scale as f64;
        by_agent
            .entry(r.client_id.as_str())
            .or_default()
            .push((t, r.lifetime_s as f64));
    }
    let mut per_lifetime = Vec::new();
    for reqs in by_agent.values_mut() {
        reqs.sort_by(|a, b| a.0.total_cmp(&b.0));
        for pair in reqs.windows(2) {
            per_lifetime.push(pair[0].1 / (pair[1].0 - pair[0].0));
        }
    }
    let requests = by_agent.into_values().flatten().collect();
    let clone_times: Vec<f64> = results.iter().flat_map(|(t, _)| t.clone()).collect();
    Outcome {
        agents,
        scale: scale as f64,
        wall,
        clones: clone_times.len(),
        failed_clones: results.iter().map(|(_, f)| f).sum(),
        waited,
        requests,
        per_lifetime,
        clone_times,
    }
}

/// The most events in any window of `window` simulated seconds, from `from` on.
fn peak(times: &[f64], window: f64, from: f64) -> usize {
    let mut t: Vec<f64> = times.iter().copied().filter(|x| *x >= from).collect();
    t.sort_by(f64::total_cmp);
    let (mut best, mut lo) = (0, 0);
    for hi in 0..t.len() {
        while t[hi] - t[lo] >= window {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

fn report(title: &str, o: &Outcome) {
    let sim_hours = o.wall.as_secs_f64() * o.scale / 3600.0;
    let n = o.requests.len();
    let mean_life = o.requests.iter().map(|r| r.1).sum::<f64>() / n.max(1) as f64;
    let lifetimes = o.agents as f64 * sim_hours * 3600.0 / mean_life;
    // Each agent's first token comes with its first clone, all at the start.
    let refreshes = n.saturating_sub(o.agents);
    let times: Vec<f64> = o.requests.iter().map(|r| r.0).collect();
    // After the fleet's start (every agent's first token at once, by design of the test).
    let settled = 600.0;
    println!("\n== {title} ==");
    println!(
        "{} agents, {:.1} simulated hours in {:.0} s (1/{}), mean token lifetime {:.1} min",
        o.agents,
        sim_hours,
        o.wall.as_secs_f64(),
        o.scale,
        mean_life / 60.0
    );
    println!("{:<52}{:>14}{:>18}", "", "daemon", "token per clone");
    let row = |what: &str, a: String, b: String| println!("{what:<52}{a:>14}{b:>18}");
    row(
        "clones (one get each)",
        o.clones.to_string(),
        o.clones.to_string(),
    );
    row(
        "clones without a token",
        o.failed_clones.to_string(),
        "-".into(),
    );
    row(
        "first clone of an agent (no token yet)",
        o.agents.min(o.waited).to_string(),
        o.agents.to_string(),
    );
    row(
        "later clones that waited on a refresh (target 0)",
        o.waited.saturating_sub(o.agents).to_string(),
        (o.clones - o.agents).to_string(),
    );
    row("Entra token requests", n.to_string(), o.clones.to_string());
    row(
        "  after each agent's first (refreshes)",
        refreshes.to_string(),
        (o.clones - o.agents).to_string(),
    );
    row(
        "Entra requests per agent per token lifetime",
        format!("{:.3}", n as f64 / lifetimes),
        format!("{:.2}", o.clones as f64 / lifetimes),
    );
    let mut pl = o.per_lifetime.clone();
    pl.sort_by(f64::total_cmp);
    let mean = pl.iter().sum::<f64>() / pl.len().max(1) as f64;
    row(
        "  in steady state, mean (target <= 1.1)",
        format!("{mean:.3}"),
        "-".into(),
    );
    row(
        "  in steady state, max",
        format!("{:.3}", pl.last().copied().unwrap_or_default()),
        "-".into(),
    );
    row(
        "Entra requests per agent per hour",
        format!("{:.2}", n as f64 / o.agents as f64 / sim_hours),
        format!("{:.2}", o.clones as f64 / o.agents as f64 / sim_hours),
    );
    row(
        "peak in any simulated minute, start-up wave",
        peak(&times, 60.0, 0.0).to_string(),
        peak(&o.clone_times, 60.0, 0.0).to_string(),
    );
    row(
        "peak in any simulated minute, after 10 minutes",
        peak(&times, 60.0, settled).to_string(),
        peak(&o.clone_times, 60.0, settled).to_string(),
    );
    row(
        "peak in any simulated 10 s, after 10 minutes",
        peak(&times, 10.0, settled).to_string(),
        peak(&o.clone_times, 10.0, settled).to_string(),
    );
}

#[test]
#[ignore = "a benchmark: minutes of wall time; run with --ignored --nocapture"]
fn fleet_day() {
    git_credential_azdo::daemon::raise_fd_limit();
    let agents = setting("FLEET_AGENTS", 200) as usize;
    let scale = setting("FLEET_SCALE", 240);
    let hours = setting("FLEET_HOURS", 24) as f64;
    let per_hour = setting("FLEET_CLONES_PER_HOUR", 6) as f64;
    let compare = setting("FLEET_COMPARE_HOURS", 3) as f64;

    let day = run_fleet(agents, scale, hours, per_hour, (60, 90), true);
    report("a day: tokens of 60-90 minutes, jitter on", &day);
    assert_eq!(day.failed_clones, 0, "every clone got a token");

    // Every token 75 minutes: the first refresh wave of agents started together.
    let on = run_fleet(agents, scale, compare, per_hour, (75, 75), true);
    report("tokens of exactly 75 minutes, jitter on", &on);
    let off = run_fleet(agents, scale, compare, per_hour, (75, 75), false);
    report("tokens of exactly 75 minutes, jitter off", &off);
    let wave = |o: &Outcome| {
        let t: Vec<f64> = o.requests.iter().map(|r| r.0).collect();
        (peak(&t, 10.0, 600.0), peak(&t, 60.0, 600.0))
    };
    let (on10, on60) = wave(&on);
    let (off10, off60) = wave(&off);
    println!("\n== the refresh wave, tokens of 75 minutes ==");
    println!("{:<40}{:>12}{:>12}", "", "jitter on", "jitter off");
    println!("{:<40}{on10:>12}{off10:>12}", "peak in any simulated 10 s");
    println!(
        "{:<40}{on60:>12}{off60:>12}",
        "peak in any simulated minute"
    );
}
