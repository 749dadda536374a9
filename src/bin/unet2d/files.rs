//! Writing output files so that a failure never passes silently and never leaves a partial file:
//! every write, the flush and the `fsync` are checked, and a regular file is written to a temporary
//! file in the same folder and renamed over the target only once all of it is on disk. A Ctrl-C or a
//! full disk therefore leaves the old file (or none) and at worst a hidden `.<name>.tmp-<pid>` file,
//! never a truncated image under the real name.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically (see the module docs). A target that exists and is not a
/// regular file (a device such as `/dev/stdout`, a FIFO) cannot be replaced by a rename: it is written
/// in place, every error still checked.
pub fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return write_in_place(path, bytes);
    }
    // A symlink stays a symlink: the file it points to is the one replaced.
    let resolved;
    let path = if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        resolved = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        resolved.as_path()
    } else {
        path
    };
    let tmp = temporary_name(path);
    let result = write_new(&tmp, bytes).and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `.<name>.tmp-<pid>` beside `path`: the same file system, so the rename is atomic.
fn temporary_name(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "output".into());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Creates `path` (which must not exist), writes `bytes`, and makes them durable.
fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(bytes)?;
    file.flush()?;
    file.sync_all()
}

/// Writes into an existing non-regular file, checking the write and the flush. `fsync` is not
/// supported by every device (`EINVAL`): only that refusal is ignored.
fn write_in_place(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).open(path)?;
    file.write_all(bytes)?;
    file.flush()?;
    match file.sync_all() {
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_replaces_the_file_whole_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("unet2d-files-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.png");
        fs::write(&path, b"old").unwrap();
        write_file(&path, b"new contents").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new contents");
        assert!(!temporary_name(&path).exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_full_device_is_an_error() {
        let err = write_file(Path::new("/dev/full"), &[0u8; 4096]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(28), "{err}");
    }
}
