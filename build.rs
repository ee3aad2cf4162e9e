//! Compiles the protobufs under proto/ with a vendored protoc, so no system protoc is needed.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("PROTOC", protoc)
    };
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("principal_descriptor.bin"))
        .compile_protos(&["proto/principal/v1/principal.proto"], &["proto"])?;
    // The example service of examples/authenticated_service.rs; kept out of the descriptor set principald reflects.
    tonic_prost_build::configure().compile_protos(&["proto/example/v1/echo.proto"], &["proto"])?;
    // The SPIFFE Workload API (proto/spiffe/workload, vendored verbatim), served by `principald agent`. It has no
    // package, so prost names its module `_`.
    tonic_prost_build::configure().compile_protos(&["proto/spiffe/workload/workload.proto"], &["proto"])?;
    // Envoy's Secret Discovery Service (proto/envoy-api: the upstream files it needs, see UPSTREAM.txt), served by
    // `principald agent` on the same socket.
    tonic_prost_build::configure().compile_protos(
        &[
            "proto/envoy-api/envoy/service/secret/v3/sds.proto",
            "proto/envoy-api/envoy/extensions/transport_sockets/tls/v3/secret.proto",
        ],
        &["proto/envoy-api"],
    )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
