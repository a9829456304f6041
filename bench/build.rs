//! Compiles the subset of etcd's `etcdserverpb` API that the benchmark speaks (KV.Range and
//! KV.Put) with protox, as `proto/` does for ringkv's own API: no system `protoc`, so no
//! `etcd-client` crate either (its build script needs one).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/etcdserverpb/rpc.proto", "proto/mvccpb/kv.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(["proto/etcdserverpb/rpc.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(descriptors)?;
    Ok(())
}
