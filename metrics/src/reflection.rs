//! gRPC server reflection (v1) for nodes and routers: `grpcurl` and other tools list and
//! call their services without the `.proto` files.

/// The reflection service over `descriptor_sets` (encoded `FileDescriptorSet`s: the
/// process's own protos) and the standard health service's descriptors.
pub fn reflection(
    descriptor_sets: &[&'static [u8]],
) -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
    tonic_reflection::server::Error,
> {
    descriptor_sets
        .iter()
        .fold(tonic_reflection::server::Builder::configure(), |builder, set| {
            builder.register_encoded_file_descriptor_set(set)
        })
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
}
