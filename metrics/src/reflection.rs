//! gRPC server reflection (v1) for nodes and routers: `grpcurl` and other tools list and
//! call their services without the `.proto` files.
//!
//! Nodes and routers share one descriptor set (every ringkv service), but each serves only
//! some of its services: the list names exactly those a process serves (a tool would
//! otherwise offer a node's `Raft` at a router, answered `UNIMPLEMENTED`), while every
//! descriptor stays resolvable by symbol or file name.

/// The reflection service over `descriptor_sets` (encoded `FileDescriptorSet`s: the
/// process's own protos) and the standard health service's descriptors, listing the
/// services named in `served` (fully qualified, `package.Service`) and the standard health
/// and reflection services.
pub fn reflection(
    descriptor_sets: &[&'static [u8]],
    served: &[&str],
) -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
    tonic_reflection::server::Error,
> {
    let standard = [
        tonic_health::pb::health_server::SERVICE_NAME,
        tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME,
    ];
    let builder = descriptor_sets
        .iter()
        .fold(tonic_reflection::server::Builder::configure(), |builder, set| {
            builder.register_encoded_file_descriptor_set(set)
        })
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    standard
        .iter()
        .chain(served)
        .fold(builder, |builder, service| builder.with_service_name(*service))
        .build_v1()
}
