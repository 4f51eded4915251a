//! Generates the Toggle protobuf types and gRPC service from `proto/` with `protox`, a
//! protobuf compiler written in Rust, so building weir needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let file = proto_dir.join("toggle/v1/events.proto");
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    let fds = protox::compile([&file], [&proto_dir])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
