//! riskgate command line: `serve`, `validate`, `check`, `test`, `replay`.

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use riskgate::audit::AuditSink;
use riskgate::config::Config;
use riskgate::offline::{self, ProxyFiles};
use riskgate::risk::RecommendationType;
use riskgate::serve::server::{self, App};
use riskgate::serve::shutdown;
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
    /// Validate config, routes, schema, entities and policies (live and shadow), and that
    /// the risk budget fits the proxy's ext_authz timeout; exit non-zero with `file:line`
    /// messages on problems.
    Validate {
        #[command(flatten)]
        config: ConfigArg,
        /// Envoy config whose `envoy.filters.http.ext_authz` `grpc_service.timeout` must
        /// exceed `risk.budget + risk.deadline_reserve` (repeatable).
        #[arg(long = "envoy-config", value_name = "FILE")]
        envoy: Vec<PathBuf>,
        /// Istio mesh config (IstioOperator, Helm values or the `istio` ConfigMap) whose
        /// `extensionProviders[].envoyExtAuthzGrpc.timeout` must fit the budget (repeatable).
        #[arg(long = "istio-config", value_name = "FILE")]
        istio: Vec<PathBuf>,
    },
    /// Decide one request offline and print the decision and the determining policies.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// HTTP method.
        #[arg(long, required_unless_present = "input")]
        method: Option<String>,
        /// Request path (a query after `?` is stripped, like `serve`).
        #[arg(long, required_unless_present = "input")]
        path: Option<String>,
        /// A CheckRequest as Envoy sends it (proto3 JSON) instead of --method/--path/--host;
        /// --principal and --claims add to its jwt_authn metadata.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["method", "path", "host"])]
        input: Option<PathBuf>,
        /// Print the decision as JSON.
        #[arg(long)]
        json: bool,
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
        #[command(flatten)]
        request: Box<RequestArgs>,
    },
    /// Re-decide recorded traffic (an audit log) with a candidate policy set and print what
    /// would change; uses the config's schema, entities and routes.
    Replay {
        #[command(flatten)]
        config: ConfigArg,
        /// Audit log (JSON lines, as `serve` writes them).
        #[arg(long, value_name = "FILE")]
        audit: PathBuf,
        /// Candidate policy directory.
        #[arg(long, value_name = "DIR")]
        policies: PathBuf,
        /// Sample decision ids shown per change.
        #[arg(long, default_value_t = 5)]
        samples: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run policy tests (`*_test.yaml` under DIR) and report failures and the policies no
    /// test exercised; exit 1 when a case fails.
    Test(TestArgs),
}

/// `riskgate check` flags that shape the request; with --input they replace or add to it.
#[derive(Args, Debug)]
struct RequestArgs {
    /// Request header 'name: value' (repeatable; a name given twice is joined with `,` as
    /// Envoy joins it; replaces the --input header of that name).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// The client address (Cedar's `context.request.ip`), instead of the --input's.
    #[arg(long, value_name = "ADDR")]
    ip: Option<String>,
    /// The calling workload's peer principal (the Check's `attributes.source.principal`),
    /// e.g. spiffe://cluster.local/ns/bank/sa/payments.
    #[arg(long, value_name = "URI")]
    source_principal: Option<String>,
    /// Request body: JSON text, or @FILE; adds `content-type: application/json` unless a
    /// --header names the content type.
    #[arg(long, value_name = "JSON|@FILE")]
    body: Option<String>,
}

#[derive(Args, Debug)]
struct TestArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Directory searched (recursively) for `*_test.yaml` policy test files.
    #[arg(default_value = "policies")]
    dir: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_recommendation(s: &str) -> Result<RecommendationType, String> {
    RecommendationType::parse(s)
        .ok_or_else(|| format!("`{s}` is not TRUST, ALLOW, CHALLENGE or DENY"))
}

/// mimalloc instead of glibc's malloc (issue #15): a Check allocates a couple of hundred
/// small blocks across two worker threads (the audit writer frees each decision on
/// whichever worker it runs), and glibc's malloc and free were ≈ 11 % of riskgate's CPU at
/// the maximum Check rate (perf); README "Performance" has the before and after.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // A usage error exits 1 like any other error: 2 is `check`'s "not allowed".
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
            // --help and --version print to stdout and exit 0.
            if let Err(print) = e.print() {
                eprintln!("riskgate: {print}");
            }
            return code;
        }
    };
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
            let sink = if audit {
                AuditSink::spawn(tokio::io::stdout(), 10_000)
            } else {
                AuditSink::disabled()
            };
            // Invalid config or policies: exit non-zero with file:line messages, never ready.
            let app = match App::from_file(&config.config, sink.clone()).await {
                Ok(app) => app,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start");
                    return Err(e.into());
                }
            };
            let grpc = grpc_listen.unwrap_or(app.config.listen.grpc);
            let admin = admin_listen.unwrap_or(app.config.listen.admin);
            shutdown::reload_on_hangup(app.reloader.clone());
            let bound = server::bind(app, grpc, admin).await?;
            tracing::info!(grpc = %bound.grpc_addr, admin = %bound.admin_addr, "riskgate listening");
            let served = bound.serve(shutdown::terminate()).await;
            // The last decisions' audit lines and spans are written before exit.
            sink.shutdown().await;
            telemetry::trace::shutdown();
            served.context("server failed")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate {
            config,
            envoy,
            istio,
        } => {
            let report = offline::validate(&config.config, &ProxyFiles { envoy, istio });
            for warning in &report.warnings {
                eprintln!("warning: {warning}");
            }
            for problem in &report.problems {
                eprintln!("{problem}");
            }
            if report.ok() {
                println!("ok: {}", report.checked.join("; "));
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!(
                    "{} problem{} found",
                    report.problems.len(),
                    if report.problems.len() == 1 { "" } else { "s" }
                );
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Replay {
            config,
            audit,
            policies,
            samples,
            json,
        } => {
            let config = Config::load(&config.config)?;
            let report = offline::replay::replay_file(&config, &policies, &audit, samples)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_text());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            config,
            method,
            path,
            input,
            json,
            host,
            principal,
            risk_score,
            recommendation,
            challenge_type,
            claims,
            request,
        } => {
            let config = Config::load(&config.config)?;
            let claims: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&claims).context("--claims must be a JSON object")?;
            let check = offline::check::CheckArgs {
                method: method.unwrap_or_default(),
                path: path.unwrap_or_default(),
                host,
                input,
                principal,
                claims,
                risk_score,
                recommendation,
                challenge_type,
                json,
                request: offline::check_request::RequestFlags {
                    headers: request.headers,
                    ip: request.ip,
                    source_principal: request.source_principal,
                    body: request.body,
                },
            };
            Ok(offline::check::run(&config, check).await?)
        }
        Command::Test(args) => {
            let config = Config::load(&args.config.config)?;
            let report = offline::policy_test::run(&config, &args.dir).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report.to_json())?);
            } else {
                print!("{}", report.render_text());
            }
            Ok(if report.failed() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
