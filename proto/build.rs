//! Compiles `proto/ringkv/v1/*.proto` with protox (a pure-Rust protobuf
//! compiler), so building ringkv never needs a system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/ringkv/v1/kv.proto",
        "proto/ringkv/v1/admin.proto",
        "proto/ringkv/v1/node.proto",
        "proto/ringkv/v1/tso.proto",
        "proto/ringkv/v1/txn.proto",
        "proto/ringkv/v1/auth.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
