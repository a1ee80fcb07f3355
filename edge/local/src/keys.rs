//! Dev signing keys, generated on first run under the data directory.
//!
//! The file holds a list so keys can be rotated by hand: prepend a new key, keep the old one
//! until the tokens it signed have expired.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use edgefront_shared::tokens::{KeyFile, KeyFileEntry, Keyring};

/// Path of the dev key file.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("dev-keys.json")
}

/// Loads the keyring, creating the directory and a fresh key on first use.
pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Keyring> {
    let path = key_path(data_dir);
    if !path.exists() {
        std::fs::create_dir_all(data_dir)?;
        let secret: [u8; 32] = rand::random();
        let kid_bytes: [u8; 4] = rand::random();
        let file = KeyFile {
            keys: vec![KeyFileEntry {
                kid: format!("dev-{}", u32::from_be_bytes(kid_bytes)),
                secret: STANDARD.encode(secret),
            }],
        };
        // Written whole under a private name, then linked into place: processes starting
        // together (an origin and an edge) all end up reading the one file that won.
        let unique: u64 = rand::random();
        let tmp = data_dir.join(format!(".dev-keys.{unique:016x}.tmp"));
        write_private(&tmp, &serde_json::to_vec_pretty(&file)?)?;
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
    }
    Keyring::from_key_file(&std::fs::read(&path)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    Ok(())
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use edgefront_shared::tokens::Role;

    #[test]
    fn processes_creating_keys_at_once_all_get_the_same_keys() {
        let dir = tempfile::tempdir().unwrap();
        let rings: Vec<Keyring> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| load_or_create(dir.path()).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let token = rings[0].sign_staff("t", Role::Admin, 1_000, 60).unwrap();
        for ring in &rings {
            assert!(ring.verify_staff(&token, 1_000).is_ok());
        }
    }
}
