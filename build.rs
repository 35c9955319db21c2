//! Compiles `proto/` into Rust with a vendored `protoc`, so a machine needs nothing but
//! cargo, and writes the descriptor set that server reflection serves.

use std::{env, error::Error, path::PathBuf};

const PROTOS: &[&str] = &[
    "proto/grants/v1/types.proto",
    "proto/grants/v1/grant_service.proto",
    "proto/grants/v1/directory_service.proto",
    "proto/grants/v1/audit_service.proto",
    "proto/grants/v1/bulk_service.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known = protoc_bin_vendored::include_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment here.
    unsafe { env::set_var("PROTOC", protoc) };

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("grants_v1_descriptor.bin"))
        .compile_protos(&PROTOS.iter().map(PathBuf::from).collect::<Vec<_>>(), &[PathBuf::from("proto"), well_known])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
