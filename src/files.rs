//! Writing files safely: private files are created 0600, and every write goes to a temporary file that is synced and
//! then renamed over the target, so a crash leaves the old or the new content, never a mix.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::Error;

/// Writes `contents` to `path` atomically with mode 0600 (owner read/write only).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), Error> {
    write_atomic(path, contents, 0o600)
}

/// Writes `contents` to `path` atomically with mode 0644.
pub fn write_public(path: &Path, contents: &[u8]) -> Result<(), Error> {
    write_atomic(path, contents, 0o644)
}

/// Creates `dir` (and parents) with mode 0700 if it does not exist.
pub fn create_private_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::InvalidArgument(format!("cannot create directory {}: {e}", dir.display())))
}

/// Points the symbolic link `link` at `target` (relative to the link's directory), atomically: a new link is made
/// beside it and renamed over whatever `link` was (an older link or a regular file), so a reader always finds one.
pub fn replace_symlink(link: &Path, target: &Path) -> Result<(), Error> {
    let fail = |e: std::io::Error| Error::InvalidArgument(format!("cannot link {}: {e}", link.display()));
    let dir = link.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = link.file_name().and_then(|n| n.to_str()).unwrap_or("link");
    let tmp = dir.join(format!(".{name}.link{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        std::os::unix::fs::symlink(target, &tmp)?;
        fs::rename(&tmp, link)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(fail)
}

fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |e: std::io::Error| Error::InvalidArgument(format!("cannot write {}: {e}", path.display()));
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_files_are_0600_and_replace_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        write_private(&path, b"one").unwrap();
        write_private(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left behind");
    }
}
