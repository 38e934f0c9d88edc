//! riskgate command line: `serve`, `validate`, `check`.

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use riskgate::audit::AuditSink;
use riskgate::config::Config;
use riskgate::offline::{self, OfflineQuestion};
use riskgate::risk::RecommendationType;
use riskgate::server::{self, App};
use riskgate::telemetry::{self, LogFormat};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "riskgate",
    version,
    about = "Envoy ext_authz: Cedar policies joined with real-time risk"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct ConfigArg {
    /// Config file (YAML).
    #[arg(
        long,
        short = 'c',
        env = "RISKGATE_CONFIG",
        default_value = "riskgate.yaml"
    )]
    config: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve ext_authz gRPC and the admin HTTP port.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
        /// Override `listen.grpc`.
        #[arg(long)]
        grpc_listen: Option<SocketAddr>,
        /// Override `listen.admin`.
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
        /// Log format.
        #[arg(long, value_enum, env = "RISKGATE_LOG_FORMAT", default_value = "json")]
        log_format: LogFormat,
        /// Write the decision audit log to stdout.
        #[arg(long, env = "RISKGATE_AUDIT", default_value_t = true, action = clap::ArgAction::Set)]
        audit: bool,
    },
    /// Validate config, routes, schema, entities and policies; exit non-zero on problems.
    Validate {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Decide one request offline and print the decision and the determining policies.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// HTTP method.
        #[arg(long)]
        method: String,
        /// Request path.
        #[arg(long)]
        path: String,
        /// Host (for host-scoped routes).
        #[arg(long, default_value = "")]
        host: String,
        /// Principal id (omit for anonymous).
        #[arg(long)]
        principal: Option<String>,
        /// Risk score 0-100 (omit: no action token).
        #[arg(long)]
        risk_score: Option<f64>,
        /// Recommendation type.
        #[arg(long, default_value = "ALLOW", value_parser = parse_recommendation)]
        recommendation: RecommendationType,
        /// Challenge type for CHALLENGE.
        #[arg(long)]
        challenge_type: Option<String>,
        /// Extra verified claims as a JSON object, e.g. '{"amr":["mfa"]}'.
        #[arg(long, default_value = "{}")]
        claims: String,
    },
}

fn parse_recommendation(s: &str) -> Result<RecommendationType, String> {
    RecommendationType::parse(s)
        .ok_or_else(|| format!("`{s}` is not TRUST, ALLOW, CHALLENGE or DENY"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("riskgate: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("riskgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            config,
            grpc_listen,
            admin_listen,
            log_format,
            audit,
        } => {
            telemetry::init_logging(log_format);
            let mut config = Config::load(&config.config)?;
            if let Some(a) = grpc_listen {
                config.listen.grpc = a;
            }
            if let Some(a) = admin_listen {
                config.listen.admin = a;
            }
            let sink = if audit {
                AuditSink::spawn(tokio::io::stdout(), 10_000)
            } else {
                AuditSink::disabled()
            };
            let app = App::build(&config, sink)?;
            let bound = server::bind(app, config.listen.grpc, config.listen.admin).await?;
            tracing::info!(grpc = %bound.grpc_addr, admin = %bound.admin_addr, "riskgate listening");
            bound
                .serve(shutdown_signal())
                .await
                .context("server failed")?;
            tracing::info!("riskgate stopped");
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { config } => {
            let loaded = Config::load(&config.config).and_then(|c| {
                c.risk.as_ref().map(|r| r.host_root()).transpose()?;
                Ok(c)
            });
            let config = match loaded {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            match server::load_snapshot(&config) {
                Ok(s) => {
                    println!(
                        "ok: {} routes, {} policies",
                        s.routes.routes().len(),
                        s.policies.policy_count()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Check {
            config,
            method,
            path,
            host,
            principal,
            risk_score,
            recommendation,
            challenge_type,
            claims,
        } => {
            let config = Config::load(&config.config)?;
            let claims: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&claims).context("--claims must be a JSON object")?;
            let q = OfflineQuestion {
                method,
                path,
                host,
                principal,
                claims,
                risk_score,
                recommendation,
                challenge_type,
            };
            let d = offline::decide(&config, &q).await?;
            let snapshot = server::load_snapshot(&config)?;
            println!("decision:  {}", d.verdict.label());
            println!("status:    {}", d.verdict.http_status());
            println!("band:      {}", d.band);
            println!("route:     {}", d.route.as_deref().unwrap_or("-"));
            println!("principal: {}", d.principal.as_deref().unwrap_or("-"));
            println!("action:    {}", d.action.as_deref().unwrap_or("-"));
            println!("resource:  {}", d.resource.as_deref().unwrap_or("-"));
            if d.policies.is_empty() {
                println!("policies:  (none)");
            }
            for id in &d.policies {
                let at = snapshot.policies.origin(id).unwrap_or("?");
                println!("policy:    {id} ({at})");
            }
            Ok(if d.verdict.http_status() == 200 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
    }
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
