//! Compiles the clients of grantd's wire contract (`../proto`) with a vendored `protoc`, so
//! a machine needs nothing but cargo: the load generator talks to grantd as any client
//! does, through the contract, not through grantd's code.

use std::{env, error::Error, path::PathBuf};

const PROTOS: &[&str] = &[
    "../proto/grants/v1/types.proto",
    "../proto/grants/v1/grant_service.proto",
    "../proto/grants/v1/directory_service.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known = protoc_bin_vendored::include_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment here.
    unsafe { env::set_var("PROTOC", protoc) };

    tonic_prost_build::configure()
        .build_server(false)
        // The clients run over the tool's own HTTP/2 connection (src/transport.rs), not
        // over tonic's transport.
        .build_transport(false)
        .compile_protos(
            &PROTOS.iter().map(PathBuf::from).collect::<Vec<_>>(),
            &[PathBuf::from("../proto"), well_known],
        )?;
    println!("cargo:rerun-if-changed=../proto");
    Ok(())
}
