//! Compiles the vendored Envoy ext_authz protos with the pure-Rust `protox` compiler,
//! so building riskgate needs no system `protoc`; and records the git revision for the
//! `riskgate_build_info` metric (`RISKGATE_GIT_REVISION` at build time wins, e.g. in a
//! container build without `.git`; "unknown" when neither is available).

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from("proto");
    let files = ["envoy/service/auth/v3/external_auth.proto"];
    println!("cargo:rerun-if-changed=proto");

    let fds = protox::compile(files, [&root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("descriptor.bin"), fds.encode_to_vec())?;

    println!("cargo:rustc-env=RISKGATE_GIT_REVISION={}", git_revision());

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .include_file("protos.rs")
        .compile_fds(fds)?;
    Ok(())
}

/// The short commit id of the source tree, re-read when HEAD moves.
fn git_revision() -> String {
    println!("cargo:rerun-if-env-changed=RISKGATE_GIT_REVISION");
    if let Some(rev) = std::env::var("RISKGATE_GIT_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
    {
        return rev;
    }
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    for watched in ["HEAD", "logs/HEAD"] {
        // only files that exist: a missing one would rerun this script at every build
        if let Some(path) =
            git(&["rev-parse", "--git-path", watched]).filter(|p| std::path::Path::new(p).exists())
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned())
}
