//! Compiles our RocketMQ 5 protocol definitions (`proto/apache/rocketmq/v2`) with
//! tonic-prost-build, client and server both.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The vendored protoc and its bundled well-known types (google/protobuf/duration.proto,
    // timestamp.proto): building needs no system protobuf compiler or includes.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known = protoc_bin_vendored::include_path()?;
    std::env::set_var("PROTOC", protoc);

    let protos = [
        "proto/apache/rocketmq/v2/definition.proto",
        "proto/apache/rocketmq/v2/service.proto",
    ];
    for proto in &protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(
            &protos.map(PathBuf::from),
            &[PathBuf::from("proto"), well_known],
        )?;
    Ok(())
}
