//! Generates the Rodent ⇄ Toggle protobuf types and gRPC client and server from
//! `proto/rodent/` with `protox`, a protobuf compiler written in Rust (no `protoc` needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script compiled in another checkout sharing the target
    // directory must not carry that checkout's path.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let proto_dir = std::path::Path::new(&manifest_dir).join("../../proto");
    println!(
        "cargo:rerun-if-changed={}",
        proto_dir.join("rodent").display()
    );
    let fds = protox::compile([proto_dir.join("rodent/base.proto")], [&proto_dir])?;
    // No transport constructor on the client: the contract's `Connect` method would
    // collide with the generated `connect(url)`; callers build a `Channel` themselves.
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
