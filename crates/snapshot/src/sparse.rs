//! Reading a sparse file without reading its holes.
//!
//! A VM disk image is mostly holes: the bench set's 200 MiB image has 36 MiB
//! of data. Reading a hole makes the kernel zero page-cache pages and copy
//! them out, which showed as 3% of a first backup's CPU in perf, all of it
//! on the walker thread. The file system says where holes are
//! (`SEEK_HOLE`/`SEEK_DATA`); there this reader writes zeros itself. The
//! bytes produced are exactly those a plain read gives, so chunks and ids
//! do not change.

use rustix::fs::SeekFrom;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;

/// Reads `f` from its start. `size` is the size seen when it was opened; a
/// hole that runs to the end of the file ends there, and anything the file
/// grew by since is read normally.
pub(crate) struct HoleSkippingReader<'f> {
    f: &'f File,
    size: u64,
    pos: u64,
    /// Data continues up to here (the next hole), when known.
    data_end: u64,
    /// Zeros continue up to here, when `pos` is in a hole.
    hole_end: u64,
}

impl<'f> HoleSkippingReader<'f> {
    pub fn new(f: &'f File, size: u64) -> Self {
        HoleSkippingReader {
            f,
            size,
            pos: 0,
            data_end: 0,
            hole_end: 0,
        }
    }

    /// Finds the extent at `pos`: sets `data_end` when it is data, or
    /// `hole_end` when it is a hole. A file system that cannot tell holes
    /// reports the whole file as data.
    fn locate(&mut self) {
        match rustix::fs::seek(self.f, SeekFrom::Hole(self.pos)) {
            Ok(h) if h > self.pos => self.data_end = h,
            Ok(_) => {
                self.hole_end = match rustix::fs::seek(self.f, SeekFrom::Data(self.pos)) {
                    Ok(d) => d,
                    // No data after `pos`: the hole runs to the end.
                    Err(_) => self.size,
                };
                if self.hole_end <= self.pos {
                    self.data_end = u64::MAX;
                }
            }
            // At or past the end (ENXIO), or no hole support: read plainly.
            Err(_) => self.data_end = u64::MAX,
        }
    }
}

impl Read for HoleSkippingReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if self.pos >= self.hole_end && self.pos >= self.data_end {
            self.locate();
        }
        if self.pos < self.hole_end {
            let n = (self.hole_end - self.pos).min(out.len() as u64) as usize;
            out[..n].fill(0);
            self.pos += n as u64;
            return Ok(n);
        }
        let want = (self.data_end - self.pos).min(out.len() as u64) as usize;
        let n = self.f.read_at(&mut out[..want], self.pos)?;
        if n == 0 && self.data_end != u64::MAX {
            // The file shrank into what was data: stop as a plain read would.
            self.data_end = self.pos;
            self.hole_end = self.pos;
            return Ok(0);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, Write};

    fn read_all(f: &File, size: u64, piece: usize) -> Vec<u8> {
        let mut r = HoleSkippingReader::new(f, size);
        let mut out = Vec::new();
        let mut buf = vec![0u8; piece];
        loop {
            let n = r.read(&mut buf).expect("read");
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn gives_the_bytes_of_a_plain_read_for_sparse_and_dense_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layouts: &[&[(u64, &[u8])]] = &[
            // data, a long hole, data, and a hole to the end
            &[(0, b"head"), (5 << 20, b"middle"), (9 << 20, b"")],
            // starts with a hole
            &[(3 << 20, b"only data")],
            // no hole at all
            &[(0, &[7u8; 100_000])],
            // empty
            &[],
        ];
        for (i, layout) in layouts.iter().enumerate() {
            let p = dir.path().join(format!("f{i}"));
            let mut f = File::create(&p).expect("create");
            let mut end = 0;
            for (at, bytes) in layout.iter() {
                f.seek(std::io::SeekFrom::Start(*at)).expect("seek");
                f.write_all(bytes).expect("write");
                end = at + bytes.len() as u64;
            }
            f.set_len(end).expect("set_len");
            drop(f);
            let want = std::fs::read(&p).expect("read");
            let f = File::open(&p).expect("open");
            for piece in [1, 4096, 1 << 20, 3 << 20] {
                let got = read_all(&f, want.len() as u64, piece);
                assert!(got == want, "layout {i}, pieces of {piece}");
            }
        }
    }

    #[test]
    fn a_file_that_grew_after_it_was_opened_is_read_to_its_new_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        let mut f = File::create(&p).expect("create");
        f.seek(std::io::SeekFrom::Start(2 << 20)).expect("seek");
        f.write_all(b"x").expect("write");
        let size = (2 << 20) + 1;
        f.write_all(b"grown").expect("write");
        drop(f);
        let f = File::open(&p).expect("open");
        let got = read_all(&f, size, 1 << 20);
        assert_eq!(got.len() as u64, size + 5);
        assert_eq!(&got[got.len() - 6..], b"xgrown");
    }
}
