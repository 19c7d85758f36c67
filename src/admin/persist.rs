//! Replacing the resources file so that a crash at any moment leaves either the old or the
//! new content, never a mix: write a temporary file in the same folder, fsync it, rename it
//! over the file, fsync the folder (the rename itself is durable only then).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The temporary file beside `path` (`.<name>.admin-tmp`). One fixed name: a leftover from a
/// crash is simply overwritten by the next write.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.admin-tmp"))
}

/// Field names whose values are secrets, as they appear in YAML or JSON text, and the
/// authentication plugins whose consumer configuration is a credential (key-auth `key`,
/// jwt-auth `secret`, …; basic-auth's is a `password`).
const SECRET_FIELDS: &[&[u8]] = &[
    b"key_passphrase",
    b"password",
    b"api_key",
    b"key-auth",
    b"jwt-auth",
    b"hmac-auth",
    b"jwe-decrypt",
];

/// Whether `text` holds a private key or a secret field (a passphrase, a password, a
/// consumer credential): such a file must not be readable by group or others. (A route that
/// only names key-auth counts too: the test is on the text, and erring on the closed side
/// costs nothing.)
pub fn holds_secret(text: &[u8]) -> bool {
    crate::tls::holds_private_key(text)
        || SECRET_FIELDS
            .iter()
            .any(|f| text.windows(f.len()).any(|w| w == *f))
}

/// Replaces `path`'s content with `text` atomically and durably. The new file keeps the old
/// one's permission bits (0600 when there was none), except that a file holding a private
/// key or a passphrase ([`holds_secret`]) is never left readable by group or others. A symlink is followed: the file it points
/// to is replaced.
///
/// Errors: any I/O error; the old file is then untouched.
pub fn replace_file(path: &Path, text: &[u8]) -> std::io::Result<()> {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mode = std::fs::metadata(&path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o600);
    let mode = if holds_secret(text) {
        mode & 0o700
    } else {
        mode
    };
    let tmp = temp_path(&path);
    let _ = std::fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    // The umask may have narrowed the mode: set it exactly.
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(text)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_with_a_private_key_is_not_left_world_readable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.yaml");
        std::fs::write(&p, "old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        // Built at run time so no key-looking block sits in the source.
        let text = format!("key: |\n  -----BEGIN {}-----\n", "PRIVATE KEY");
        replace_file(&p, text.as_bytes()).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn consumer_credentials_are_secret() {
        assert!(holds_secret(
            b"consumers:\n- username: jack\n  plugins:\n    key-auth:\n      key: k\n"
        ));
        assert!(!holds_secret(b"routes:\n- uri: /a\n"));
    }

    #[test]
    fn replaces_and_keeps_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("resources.yaml");
        std::fs::write(&p, "old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        replace_file(&p, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert!(!temp_path(&p).exists());
        // A leftover temporary file from a crash does not get in the way.
        std::fs::write(temp_path(&p), "half").unwrap();
        replace_file(&p, b"newer").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "newer");
    }
}
