//! The compiled `ringkv.v1` descriptors: served by gRPC server reflection, and read for the
//! method names of each service (per-method metrics).

use prost::Message;

/// The encoded `FileDescriptorSet` of every `ringkv/v1/*.proto` file.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ringkv_descriptor.bin"));

/// The method names of `service` (its full name, `ringkv.v1.ShardKv`), in declaration order;
/// empty for a service the descriptors do not hold.
pub fn service_methods(service: &str) -> Vec<String> {
    let Ok(set) = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET) else {
        return Vec::new();
    };
    set.file
        .iter()
        .flat_map(|file| {
            let package = file.package().to_string();
            file.service
                .iter()
                .map(move |declared| (package.clone(), declared))
        })
        .filter(|(package, declared)| format!("{package}.{}", declared.name()) == service)
        .flat_map(|(_, declared)| declared.method.iter().map(|method| method.name().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The descriptors name the generated services' methods.
    #[test]
    fn names_the_methods_of_each_service() {
        let methods = service_methods(crate::v1::shard_kv_server::SERVICE_NAME);
        assert!(methods.contains(&"Read".to_string()), "{methods:?}");
        assert!(methods.contains(&"TxnOnePc".to_string()), "{methods:?}");
        assert!(service_methods(crate::v1::kv_server::SERVICE_NAME).contains(&"Put".to_string()));
        assert!(service_methods("ringkv.v1.Nothing").is_empty());
    }
}
