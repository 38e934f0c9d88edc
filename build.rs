//! Compiles the vendored Envoy ext_authz protos with the pure-Rust `protox` compiler,
//! so building riskgate needs no system `protoc`.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from("proto");
    let files = ["envoy/service/auth/v3/external_auth.proto"];
    println!("cargo:rerun-if-changed=proto");

    let fds = protox::compile(files, [&root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .include_file("protos.rs")
        .compile_fds(fds)?;
    Ok(())
}
