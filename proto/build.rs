//! Compiles `proto/ringkv/v1/*.proto` with protox (a pure-Rust protobuf
//! compiler), so building ringkv never needs a system `protoc`. The compiled descriptors
//! are also written to `$OUT_DIR/ringkv_descriptor.bin` (server reflection, method names).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/ringkv/v1/kv.proto",
        "proto/ringkv/v1/admin.proto",
        "proto/ringkv/v1/node.proto",
        "proto/ringkv/v1/tso.proto",
        "proto/ringkv/v1/txn.proto",
        "proto/ringkv/v1/auth.proto",
        "proto/ringkv/v1/lease.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("ringkv_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
