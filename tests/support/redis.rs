//! Real Redis servers for the state-store tests, on free loopback ports: standalone, standalone
//! with a password and TLS (certificates from [`super::certs`]), and a 3-master Cluster.
//!
//! The binaries come from `REDIS_SERVER_BIN` / `REDIS_CLI_BIN` (exported by
//! `scripts/redis-env.sh`, which installs Debian's `redis-server` when missing) or `PATH`.
//! Without them a test prints a skip line and returns early — or fails when
//! `RISKGATE_REQUIRE_ENVOY=1` (CI), like a missing Envoy. Servers run without persistence
//! unless asked (`--save ''`), each in its own process group, stopped on drop.

use super::certs::Ca;
use super::ports::{free_port, free_ports, loopback};
use super::procs::{Proc, TestDir};
use super::wait::{self, ready_timeout, Probe};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;

/// The `redis-server` and `redis-cli` binaries.
#[derive(Clone, Debug)]
pub struct Bins {
    pub server: PathBuf,
    pub cli: PathBuf,
}

fn find(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(v);
        assert!(
            p.is_file(),
            "{var}={} is not a file; unset it or run scripts/redis-env.sh",
            p.display()
        );
        return Some(p);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// The binaries, or `None` (after printing why) when the test should be skipped. Panics when
/// they are missing and `RISKGATE_REQUIRE_ENVOY=1`.
pub fn binaries() -> Option<Bins> {
    if let (Some(server), Some(cli)) = (
        find("REDIS_SERVER_BIN", "redis-server"),
        find("REDIS_CLI_BIN", "redis-cli"),
    ) {
        return Some(Bins { server, cli });
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_owned();
    let why = "no redis-server/redis-cli (REDIS_SERVER_BIN unset, none on PATH); run scripts/redis-env.sh";
    if std::env::var("RISKGATE_REQUIRE_ENVOY").is_ok_and(|v| v == "1") {
        panic!("{test}: {why} (RISKGATE_REQUIRE_ENVOY=1, so this is a failure, not a skip)");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
    None
}

/// TLS material written for a server and its clients.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TlsFiles {
    /// A fresh CA, a server certificate for `127.0.0.1`/`localhost` and a client certificate.
    pub fn make(dir: &TestDir) -> TlsFiles {
        let ca = Ca::new("redis test ca");
        let server = ca.server(&["localhost", "127.0.0.1"]);
        let client = ca.client("riskgate");
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).expect("write a TLS file");
            p
        };
        TlsFiles {
            ca: write("ca.pem", &ca.cert_pem),
            server_cert: write("redis.pem", &server.cert_pem),
            server_key: write("redis.key", &server.key_pem),
            client_cert: write("client.pem", &client.cert_pem),
            client_key: write("client.key", &client.key_pem),
        }
    }
}

/// One redis-server process; restartable on the same port with the same arguments.
pub struct Redis {
    bins: Bins,
    name: String,
    args: Vec<String>,
    pub port: u16,
    tls: bool,
    proc: Option<Proc>,
    starts: u32,
}

impl Redis {
    /// Starts a standalone server with `extra` arguments (e.g. `--maxmemory-policy allkeys-lru`).
    pub async fn start(bins: &Bins, dir: &TestDir, name: &str, extra: &[&str]) -> Redis {
        Redis::start_on(bins, dir, name, free_port(), false, extra).await
    }

    /// Starts a server that only speaks TLS (client certificates required) and needs `password`.
    pub async fn start_tls(
        bins: &Bins,
        dir: &TestDir,
        name: &str,
        tls: &TlsFiles,
        password: &str,
    ) -> Redis {
        let args = [
            "--port".to_owned(),
            "0".to_owned(),
            "--tls-cert-file".to_owned(),
            tls.server_cert.display().to_string(),
            "--tls-key-file".to_owned(),
            tls.server_key.display().to_string(),
            "--tls-ca-cert-file".to_owned(),
            tls.ca.display().to_string(),
            "--tls-auth-clients".to_owned(),
            "yes".to_owned(),
            "--requirepass".to_owned(),
            password.to_owned(),
        ];
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Redis::start_on(bins, dir, name, free_port(), true, &refs).await
    }

    async fn start_on(
        bins: &Bins,
        dir: &TestDir,
        name: &str,
        port: u16,
        tls: bool,
        extra: &[&str],
    ) -> Redis {
        let port_flag = if tls { "--tls-port" } else { "--port" };
        let mut args: Vec<String> = vec![
            port_flag.into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            dir.path().display().to_string(),
            "--dbfilename".into(),
            format!("{name}.rdb"),
            "--appendfilename".into(),
            format!("{name}.aof"),
            "--appenddirname".into(),
            format!("{name}-aof"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut r = Redis {
            bins: bins.clone(),
            name: name.to_owned(),
            args,
            port,
            tls,
            proc: None,
            starts: 0,
        };
        r.spawn(dir).await;
        r
    }

    async fn spawn(&mut self, dir: &TestDir) {
        self.starts += 1;
        let mut cmd = Command::new(&self.bins.server);
        cmd.args(&self.args);
        let label = format!("{}-{}", self.name, self.starts);
        let proc = Proc::spawn(dir, &label, cmd);
        if let Err(e) = wait::tcp(loopback(self.port), ready_timeout()).await {
            proc.dump_logs();
            panic!("{label}: {e}");
        }
        self.proc = Some(proc);
    }

    /// `redis://127.0.0.1:<port>` (or `rediss://`).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGTERM, then SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop();
        }
    }

    /// Starts it again on the same port with the same arguments.
    pub async fn restart(&mut self, dir: &TestDir) {
        self.kill();
        self.spawn(dir).await;
    }

    /// Runs `redis-cli` against this (plain) server and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(&self.bins, self.port, args)
    }
}

fn cli(bins: &Bins, port: u16, args: &[&str]) -> String {
    let out = Command::new(&bins.cli)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A Cluster of three masters, no replicas.
pub struct Cluster {
    pub nodes: Vec<Redis>,
}

impl Cluster {
    /// Starts three cluster-enabled servers (explicit bus ports), joins them with
    /// `redis-cli --cluster create`, and waits until every node reports `cluster_state:ok`.
    pub async fn start(bins: &Bins, dir: &TestDir) -> Cluster {
        let ports = free_ports::<6>();
        let mut nodes = Vec::new();
        for i in 0..3 {
            let (port, bus) = (ports[i], ports[i + 3]);
            let conf = dir
                .join(&format!("nodes-{port}.conf"))
                .display()
                .to_string();
            let bus = bus.to_string();
            let extra = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                conf.as_str(),
                "--cluster-port",
                bus.as_str(),
                "--cluster-node-timeout",
                "2000",
            ];
            nodes.push(
                Redis::start_on(bins, dir, &format!("cluster{i}"), port, false, &extra).await,
            );
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new(&bins.cli)
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for n in &nodes {
            let port = n.port;
            let bins = bins.clone();
            wait::until(&format!("cluster node {port}"), ready_timeout(), || {
                let info = cli(&bins, port, &["cluster", "info"]);
                async move {
                    if info.contains("cluster_state:ok") {
                        Probe::Ready(())
                    } else {
                        Probe::NotYet(info.lines().next().unwrap_or("").to_owned())
                    }
                }
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        }
        Cluster { nodes }
    }

    /// Seed URLs of all three nodes.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Redis::url).collect()
    }
}
