//! A PDF file mapped read-only into memory, so PDFium reads it in place.
//!
//! Why not read it into a `Vec`: a mapping costs no copy and no anonymous memory; the kernel
//! pages the file in as PDFium touches it and can drop those pages again under pressure, so a
//! 100 MB file does not add 100 MB to the helper's heap (nor to the RSS that decides when a warm
//! helper is recycled, which counts anonymous memory only). PDFium's own file loader would do
//! the same through `read` calls, but the page walk takes a byte slice.
//!
//! The file must not be truncated while it is mapped (reads past the new end raise SIGBUS); the
//! pipeline's files are its own temporary copies, and in the helper a SIGBUS fails only the
//! document, like any other crash.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// A read-only private mapping of a whole file (an empty file maps to an empty slice).
pub struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value; sharing `&[u8]` views across
// threads is as safe as for any immutable byte buffer.
unsafe impl Send for Mapped {}
// SAFETY: as above: nothing writes through the mapping.
unsafe impl Sync for Mapped {}

impl Mapped {
    /// Maps `path`; the error says what went wrong, with the path.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = File::open(path)?;
        let len = usize::try_from(file.metadata()?.len())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        if len == 0 {
            return Ok(Mapped {
                ptr: std::ptr::null_mut(),
                len: 0,
            });
        }
        // SAFETY: a fresh read-only private mapping of an open file descriptor; the result is
        // checked before use, and the descriptor may be closed after mmap returns.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapped { ptr, len })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr` is a live mapping of `len` readable bytes until Drop.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmaps exactly the mapping made in `open`; no slice outlives `self`.
            unsafe {
                libc::munmap(self.ptr, self.len);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_a_file_and_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.pdf");
        std::fs::write(&path, b"%PDF-1.4 hello").unwrap();
        assert_eq!(Mapped::open(&path).unwrap().bytes(), b"%PDF-1.4 hello");
        std::fs::write(&path, b"").unwrap();
        assert_eq!(Mapped::open(&path).unwrap().bytes(), b"");
        assert!(Mapped::open(&dir.path().join("none.pdf")).is_err());
    }
}
