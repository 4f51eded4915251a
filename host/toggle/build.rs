//! Generates Toggle's protobuf types and gRPC service from `proto/toggle/v1/events.proto`
//! with `protox`, a protobuf compiler written in Rust (no `protoc` needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script compiled in another checkout sharing the target
    // directory must not carry that checkout's path.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let proto_dir = std::path::Path::new(&manifest_dir).join("../../proto");
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    let fds = protox::compile([proto_dir.join("toggle/v1/events.proto")], [&proto_dir])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
