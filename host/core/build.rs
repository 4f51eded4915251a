//! Generates the protobuf types that belong to no transport from `proto/` with `protox`, a
//! protobuf compiler written in Rust (no `protoc` needed): the CloudEvents Protobuf Event
//! Format and weir's dead letters. Toggle's types are generated in `weir-toggle`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script compiled in another checkout sharing the target
    // directory must not carry that checkout's path.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let proto_dir = std::path::Path::new(&manifest_dir).join("../../proto");
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    let files = [
        "io/cloudevents/v1/cloudevents.proto",
        "weir/v1/dead_letter.proto",
    ]
    .map(|f| proto_dir.join(f));
    let fds = protox::compile(files, [&proto_dir])?;
    prost_build::Config::new()
        // Event data and raw record bytes are shared, not copied, when decoded.
        .bytes([".io.cloudevents.v1", ".weir.v1"])
        // Extensions come back in a stable order (by name).
        .btree_map([".io.cloudevents.v1"])
        .compile_fds(fds)?;
    Ok(())
}
