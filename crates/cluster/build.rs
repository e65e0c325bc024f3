//! Compiles `proto/` (lidscope's job API) with protox, a protobuf compiler in Rust, so that
//! building needs no system `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: `env!` would bake in the path of whichever clone first built this script,
    // and a shared target directory reuses the script across clones.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let file = root.join("lidscope/v1/coordinator.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&root])?;
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(fds)?;
    Ok(())
}
