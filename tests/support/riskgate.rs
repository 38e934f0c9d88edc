//! riskgate as a real process: a config rendered from the shipped `deploy/riskgate.yaml`
//! (loopback ports, the repo's policies, the simulator's URL, a test secret file), started with
//! the built binary, waited for on `/readyz`. Its stdout is the decision audit log.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml_ng::Value;

use super::ports::free_ports;
use super::procs::{Proc, TestDir};
use super::wait;

/// A binary of this workspace. `riskgate` is Cargo's own path in this package's tests; any other
/// binary (`risk-sim`, from the `crates/risk-sim` member, which Cargo does not hand to another
/// package's targets) and any binary run from an example is looked up in the profile directory
/// this executable was built into (`target/debug/` for `target/debug/{deps,examples}/NAME`, so
/// `CARGO_TARGET_DIR` is honoured), else in `target/debug/` of the repository. Build it first:
/// `scripts/demo.sh` runs `cargo build --locked -p riskgate -p risk-sim --bins`.
pub fn binary(name: &str) -> PathBuf {
    let from_cargo = match name {
        "riskgate" => option_env!("CARGO_BIN_EXE_riskgate"),
        _ => None,
    };
    if let Some(path) = from_cargo {
        return PathBuf::from(path);
    }
    let profile_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf));
    match profile_dir.map(|dir| dir.join(name)) {
        Some(path) if path.is_file() => path,
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/debug")
            .join(name),
    }
}

/// A running riskgate.
pub struct Riskgate {
    proc: Proc,
    /// ext_authz gRPC port.
    pub grpc_port: u16,
    /// Admin HTTP port.
    pub admin_port: u16,
}

fn set(v: &mut Value, path: &[&str], value: Value) {
    let mut cur = v;
    for key in &path[..path.len() - 1] {
        let map = cur.as_mapping_mut().expect("config mapping");
        cur = map
            .entry(Value::from(*key))
            .or_insert_with(|| Value::Mapping(Default::default()));
    }
    cur.as_mapping_mut()
        .expect("config mapping")
        .insert(Value::from(*path.last().expect("non-empty path")), value);
}

/// The shipped config as a YAML value, adapted for a test (`tweak` may change anything).
pub fn render_config(
    dir: &TestDir,
    risk_base_url: &str,
    grpc_port: u16,
    admin_port: u16,
    tweak: impl FnOnce(&mut Value),
) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("deploy/riskgate.yaml"))
        .expect("read deploy/riskgate.yaml");
    let mut v: Value = serde_yaml_ng::from_str(&text).expect("parse deploy/riskgate.yaml");
    let policies = root.join("policies");
    let secret = dir.join("client-secret");
    std::fs::write(&secret, "sim-secret\n").expect("write the test client secret");
    set(
        &mut v,
        &["listen", "grpc"],
        Value::from(format!("127.0.0.1:{grpc_port}")),
    );
    set(
        &mut v,
        &["listen", "admin"],
        Value::from(format!("127.0.0.1:{admin_port}")),
    );
    set(
        &mut v,
        &["policies", "dir"],
        Value::from(policies.display().to_string()),
    );
    set(
        &mut v,
        &["policies", "schema"],
        Value::from(policies.join("schema.cedarschema").display().to_string()),
    );
    set(
        &mut v,
        &["policies", "entities"],
        Value::from(policies.join("entities.json").display().to_string()),
    );
    set(&mut v, &["risk", "base_url"], Value::from(risk_base_url));
    set(&mut v, &["risk", "client_id"], Value::from("riskgate-test"));
    set(
        &mut v,
        &["risk", "client_secret_file"],
        Value::from(secret.display().to_string()),
    );
    // Tests and the demo stop riskgate with SIGTERM: no load balancer needs a drain period.
    set(&mut v, &["shutdown", "drain"], Value::from("0ms"));
    set(&mut v, &["reload", "poll"], Value::from("200ms"));
    without_body_mappings(&mut v);
    tweak(&mut v);
    serde_yaml_ng::to_string(&v).expect("render config")
}

/// Removes `routes[].body` (issue #16): tests of other stages send withdrawals without a
/// JSON body or `transaction_data`; a test of the body mapping puts the shipped routes back
/// with [`shipped_routes`].
pub fn without_body_mappings(v: &mut Value) {
    if let Some(routes) = v.get_mut("routes").and_then(Value::as_sequence_mut) {
        for route in routes {
            if let Some(map) = route.as_mapping_mut() {
                map.remove("body");
            }
        }
    }
}

/// The shipped `routes` (with their body mappings), for a `tweak` to put back.
pub fn shipped_routes() -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("deploy/riskgate.yaml"))
        .expect("read deploy/riskgate.yaml");
    let v: Value = serde_yaml_ng::from_str(&text).expect("parse deploy/riskgate.yaml");
    v.get("routes").cloned().expect("shipped routes")
}

/// Waits for `/readyz` (200), failing at once when the process has exited.
async fn ready_or_exited(proc: &mut Proc, ready: &str) -> Result<(), String> {
    let client = &super::http::client();
    wait::until("riskgate /readyz", wait::ready_timeout(), || {
        let exited = proc.exited();
        async move {
            if let Some(status) = exited {
                return wait::Probe::Fatal(format!("riskgate exited during start-up ({status})"));
            }
            match client.get(ready).send().await {
                Ok(r) if r.status().is_success() => wait::Probe::Ready(()),
                Ok(r) => wait::Probe::NotYet(format!("status {}", r.status())),
                Err(e) => wait::Probe::NotYet(e.to_string()),
            }
        }
    })
    .await
}

impl Riskgate {
    /// Starts riskgate against the risk API at `risk_base_url` and waits until it is ready.
    pub async fn start(
        dir: &TestDir,
        risk_base_url: &str,
        tweak: impl FnOnce(&mut Value),
    ) -> Riskgate {
        let [grpc_port, admin_port] = free_ports::<2>();
        let config = render_config(dir, risk_base_url, grpc_port, admin_port, tweak);
        let mut config: Value =
            serde_yaml_ng::from_str(&config).expect("re-read the rendered config");
        // A port found free can be taken by another test process before riskgate binds it:
        // riskgate then exits naming the address, and is started again on new ports.
        const ATTEMPTS: usize = 5;
        let (mut grpc_port, mut admin_port) = (grpc_port, admin_port);
        for attempt in 1..=ATTEMPTS {
            set(
                &mut config,
                &["listen", "grpc"],
                Value::from(format!("127.0.0.1:{grpc_port}")),
            );
            set(
                &mut config,
                &["listen", "admin"],
                Value::from(format!("127.0.0.1:{admin_port}")),
            );
            let path = dir.join("riskgate.yaml");
            std::fs::write(
                &path,
                serde_yaml_ng::to_string(&config).expect("render config"),
            )
            .expect("write riskgate.yaml");
            let mut cmd = Command::new(binary("riskgate"));
            cmd.args(["serve", "--log-format", "text", "-c"]).arg(&path);
            let mut proc = Proc::spawn(dir, "riskgate", cmd);
            let ready = format!("http://127.0.0.1:{admin_port}/readyz");
            match ready_or_exited(&mut proc, &ready).await {
                Ok(()) => {
                    return Riskgate {
                        proc,
                        grpc_port,
                        admin_port,
                    }
                }
                _ if attempt < ATTEMPTS
                    && proc.exited().is_some()
                    && proc.stderr().contains("cannot listen on") =>
                {
                    eprintln!(
                        "riskgate: a port was taken before it bound it; retrying with new ports"
                    );
                    drop(proc);
                    [grpc_port, admin_port] = free_ports::<2>();
                }
                result => {
                    proc.dump_logs();
                    panic!("riskgate did not become ready: {result:?}");
                }
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Audit lines written so far (one JSON object per decision).
    pub fn audit(&self) -> Vec<serde_json::Value> {
        self.proc
            .stdout()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The audit line of one decision.
    pub fn audit_line(&self, decision_id: &str) -> Option<serde_json::Value> {
        self.audit()
            .into_iter()
            .find(|l| l["decision_id"].as_str() == Some(decision_id))
    }

    /// Waits for the audit line of one decision (lines are written off the Check path).
    pub async fn wait_audit_line(&self, decision_id: &str) -> serde_json::Value {
        let found = wait::until(
            &format!("audit line {decision_id}"),
            wait::ready_timeout(),
            || async move {
                match self.audit_line(decision_id) {
                    Some(line) => wait::Probe::Ready(line),
                    None => wait::Probe::NotYet("not written yet".into()),
                }
            },
        )
        .await;
        found.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Everything it logged (stderr) and audited (stdout).
    pub fn output(&self) -> String {
        format!("{}{}", self.proc.stdout(), self.proc.stderr())
    }

    /// The process, to stop or signal it.
    pub fn proc_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

/// The `identity` section of `deploy/kubernetes/base/riskgate.yaml` (jwt_authn metadata and the
/// trusted `x-jwt-payload` header): what riskgate runs with behind Istio and the mTLS Envoy.
pub fn kubernetes_identity() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/base/riskgate.yaml");
    let text = std::fs::read_to_string(&path).expect("read deploy/kubernetes/base/riskgate.yaml");
    let v: Value =
        serde_yaml_ng::from_str(&text).expect("parse deploy/kubernetes/base/riskgate.yaml");
    let identity = v["identity"].clone();
    assert!(
        identity["trusted_header"]["name"].as_str().is_some(),
        "deploy/kubernetes/base/riskgate.yaml trusts a header"
    );
    identity
}
