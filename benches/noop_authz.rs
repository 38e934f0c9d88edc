//! The do-nothing ext_authz server that `scripts/bench-side-by-side.sh` measures riskgate
//! against: the same tonic, prost and tokio (multi-thread runtime, TCP_NODELAY, plaintext
//! HTTP/2), answering every Check with `OK` and nothing else, so the difference between
//! the two is riskgate's own pipeline.
//!
//! ```text
//! noop_authz --listen 127.0.0.1:9101        serve until killed
//! noop_authz --write-check FILE             write a gRPC-framed CheckRequest for h2load -d
//! ```
//!
//! Without arguments (as `cargo bench` runs every bench) it prints this usage and exits.

use riskgate::pb::envoy::config::core::v3::{address, Address, SocketAddress};
use riskgate::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use riskgate::pb::envoy::service::auth::v3::{
    attribute_context, check_response::HttpResponse, AttributeContext, CheckRequest, CheckResponse,
    OkHttpResponse,
};
use riskgate::pb::google::rpc::Status as RpcStatus;
use std::net::SocketAddr;
use std::process::ExitCode;
use tonic::server::NamedService as _;
use tonic::transport::server::TcpIncoming;

/// Answers every Check with gRPC code 0 and an empty `OkHttpResponse`.
#[derive(Debug, Default)]
struct Noop;

#[tonic::async_trait]
impl Authorization for Noop {
    async fn check(
        &self,
        _request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(CheckResponse {
            status: Some(RpcStatus {
                code: 0,
                ..Default::default()
            }),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
            ..Default::default()
        }))
    }
}

/// A Check as Envoy sends it for an anonymous `GET /bench/1` (the side-by-side route), in
/// gRPC's length-prefixed framing: one flag byte (not compressed), a big-endian u32 length,
/// the message.
fn framed_check() -> Vec<u8> {
    let peer = |port: u32| Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: "127.0.0.1".into(),
            port_specifier: Some(
                riskgate::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(
                    port,
                ),
            ),
            ..Default::default()
        })),
    };
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(attribute_context::Peer {
                address: Some(peer(40000)),
                ..Default::default()
            }),
            destination: Some(attribute_context::Peer {
                address: Some(peer(10000)),
                ..Default::default()
            }),
            request: Some(attribute_context::Request {
                time: None,
                http: Some(attribute_context::HttpRequest {
                    id: "1".into(),
                    method: "GET".into(),
                    path: "/bench/1".into(),
                    host: "bench.local".into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    headers: [
                        (":authority".to_owned(), "bench.local".to_owned()),
                        (":method".to_owned(), "GET".to_owned()),
                        (":path".to_owned(), "/bench/1".to_owned()),
                        (":scheme".to_owned(), "http".to_owned()),
                        ("user-agent".to_owned(), "wrk".to_owned()),
                        (
                            "x-request-id".to_owned(),
                            "5f0c6b3e-4a4f-4d2c-9a1e-0d6a8f3b7c21".to_owned(),
                        ),
                        ("x-forwarded-proto".to_owned(), "http".to_owned()),
                    ]
                    .into(),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    };
    let body = prost::Message::encode_to_vec(&request);
    let mut framed = Vec::with_capacity(body.len() + 5);
    framed.push(0);
    framed.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    framed.extend_from_slice(&body);
    framed
}

async fn serve(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let incoming = TcpIncoming::bind(addr)?.with_nodelay(Some(true));
    eprintln!(
        "noop_authz: serving {} on {addr}",
        AuthorizationServer::<Noop>::NAME
    );
    tonic::transport::Server::builder()
        .add_service(AuthorizationServer::new(Noop))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["--write-check", file] => match std::fs::write(file, framed_check()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("noop_authz: cannot write {file}: {e}");
                ExitCode::FAILURE
            }
        },
        ["--listen", addr] => {
            let Ok(addr) = addr.parse::<SocketAddr>() else {
                eprintln!("noop_authz: `{addr}` is not an address");
                return ExitCode::FAILURE;
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("noop_authz: cannot start runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(addr)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("noop_authz: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!(
                "usage: noop_authz --listen ADDR | --write-check FILE (see scripts/bench-side-by-side.sh)"
            );
            ExitCode::SUCCESS
        }
    }
}
