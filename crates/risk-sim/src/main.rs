//! `risk-sim`: the risk API simulator as a stand-alone server, for the demo and end-to-end tests.
//!
//! Prints exactly one line, `risk-sim listening on http://ADDR`, to stdout once it is bound
//! (harnesses read it to learn the port when `--listen` uses port 0); logs go to stderr. Stops
//! cleanly on SIGTERM or Ctrl-C.

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use risk_sim::SimConfig;

/// Simulator of the Transmit Security Recommendations API (`/oidc/token`,
/// `/risk/v1/recommendation`) with test controls under `/_sim/`.
#[derive(Debug, Parser)]
#[command(name = "risk-sim", version)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "RISK_SIM_LISTEN", default_value = "127.0.0.1:8085")]
    listen: SocketAddr,
    /// Script file (YAML, or JSON when it ends in `.json`): action token → scripted action.
    #[arg(long, env = "RISK_SIM_SCRIPT")]
    script: Option<PathBuf>,
    /// The accepted OAuth2 client id.
    #[arg(long, env = "RISK_SIM_CLIENT_ID", default_value = "riskgate-test")]
    client_id: String,
    /// File holding the accepted client secret (trailing newline ignored). Without it the secret
    /// comes from `RISK_SIM_CLIENT_SECRET`, else the default `sim-secret`.
    #[arg(long, env = "RISK_SIM_CLIENT_SECRET_FILE")]
    client_secret_file: Option<PathBuf>,
    /// Lifetime of issued bearer tokens, in milliseconds.
    #[arg(long, env = "RISK_SIM_TOKEN_LIFETIME_MS", default_value_t = 3_600_000)]
    token_lifetime_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();

    let config = SimConfig {
        client_secret: client_secret(args.client_secret_file.as_deref())?,
        client_id: args.client_id,
        token_lifetime_ms: args.token_lifetime_ms,
        script: match &args.script {
            Some(path) => risk_sim::load_script(path)?,
            None => Default::default(),
        },
    };
    let scripted = config.script.len();
    let sim = risk_sim::start(config, args.listen)
        .await
        .with_context(|| format!("cannot listen on `{}`", args.listen))?;

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "risk-sim listening on {}", sim.base_url())?;
    stdout.flush()?;
    drop(stdout);
    tracing::info!(addr = %sim.addr(), scripted, "risk simulator ready");

    shutdown_signal().await?;
    tracing::info!("shutting down");
    sim.shutdown().await;
    Ok(())
}

/// The secret from `--client-secret-file`, else `RISK_SIM_CLIENT_SECRET`, else the default.
fn client_secret(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read client secret file `{}`", path.display()))?;
        return Ok(text.trim_end_matches(['\r', '\n']).to_owned());
    }
    match std::env::var("RISK_SIM_CLIENT_SECRET") {
        Ok(secret) => Ok(secret),
        Err(std::env::VarError::NotPresent) => Ok(SimConfig::default().client_secret),
        Err(err) => Err(err).context("invalid `RISK_SIM_CLIENT_SECRET`"),
    }
}

/// Resolves on Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot listen for SIGTERM")?;
        tokio::select! {
            ctrl_c = tokio::signal::ctrl_c() => ctrl_c.context("cannot listen for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("cannot listen for Ctrl-C")?;
    Ok(())
}
