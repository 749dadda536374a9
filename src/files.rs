//! Opening the files a model folder names: regular files only, and JSON read up to a size cap.
//!
//! A `config.json` that is a FIFO would block the reader forever (opening a FIFO waits for a writer),
//! and one that is a symlink to `/dev/zero` would be read until memory runs out. So files are opened
//! non-blocking, checked to be regular files on the open descriptor (no window between a check and
//! the open), and JSON is read through a cap of [`MAX_JSON_BYTES`].

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// Largest JSON file read (configs and shard indexes are kilobytes; a shard index of a huge model a
/// few megabytes).
pub const MAX_JSON_BYTES: u64 = 64 << 20;

/// What a file that is not a regular one is, for messages.
fn kind_of(meta: &Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if meta.is_dir() {
        "a folder"
    } else {
        "not a regular file"
    }
}

/// The error for `path` being `meta`'s kind of file.
fn not_regular(path: &Path, meta: &Metadata) -> Error {
    Error::io(
        path,
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("is {}; only regular files are read", kind_of(meta)),
        ),
    )
}

/// Fails unless `path` (following symlinks) is a regular file; a missing file is the `Io` error of
/// kind `NotFound`.
pub fn check_regular(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_file() {
        Ok(())
    } else {
        Err(not_regular(path, &meta))
    }
}

/// Whether something (of any kind) exists at `path`, following symlinks.
pub fn exists(path: &Path) -> bool {
    std::fs::metadata(path).is_ok()
}

/// Opens `path` for reading if it is a regular file: opened non-blocking (a FIFO does not wait for a
/// writer), then checked on the descriptor.
pub fn open_regular(path: &Path) -> Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(not_regular(path, &meta));
    }
    Ok(file)
}

/// Reads a JSON (text) file: a regular file of at most [`MAX_JSON_BYTES`].
pub fn read_json_text(path: &Path) -> Result<String> {
    let file = open_regular(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_JSON_BYTES + 1).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > MAX_JSON_BYTES {
        return Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("is larger than {MAX_JSON_BYTES} bytes, the most read for a JSON file"),
            ),
        ));
    }
    String::from_utf8(bytes)
        .map_err(|e| Error::io(path, std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not UTF-8: {e}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn devices_and_folders_are_refused_without_reading() {
        let err = read_json_text(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(err.contains("character device"), "{err}");
        let err = read_json_text(Path::new("/")).unwrap_err().to_string();
        assert!(err.contains("a folder"), "{err}");
    }
}
