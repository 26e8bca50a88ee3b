//! Writes the CRD YAML of every DreamPipe kind into `crds/yaml/`.
//! Run `cargo run -p crds --bin crdgen` after changing the types.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("yaml");
    std::fs::create_dir_all(&dir)?;
    for (file, yaml) in crds::generate::crd_files() {
        let path = dir.join(file);
        std::fs::write(&path, yaml)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
