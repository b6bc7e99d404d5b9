//! Content-defined cutting of a file as it is read: FastCDC 2020 (the
//! `fastcdc` crate's own cut function, so the cut points are exactly those
//! of its `StreamCDC`) over one buffer that lives as long as the walk.
//!
//! Why not `StreamCDC` itself: it allocates and zeroes a max-size buffer per
//! file, and for every chunk it copies the chunk out, shifts the rest of the
//! buffer to the front and zeroes the freed tail: about five bytes of memory
//! traffic per byte backed up, on the walker thread, which is the one thread
//! a first backup waits for. Here a chunk is a slice of the buffer, copied
//! only when it is new to the repository, and the unread rest moves to the
//! front only when less than one maximum chunk is left.

use fastcdc::v2020::{self, Normalization};
use std::io::Read;

/// The buffer holds two maximum chunks, so a shift moves less than one
/// chunk per maximum chunk read.
const BUFFER_CHUNKS: usize = 2;

#[derive(Clone)]
pub(crate) struct Cutter {
    min: usize,
    avg: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
    buf: Vec<u8>,
    /// Where FastCDC cuts a maximum chunk's worth of zeros, once computed.
    zero_cut: Option<usize>,
}

impl Cutter {
    /// The chunker a repository's config names; a size out of FastCDC's
    /// range (a damaged or hostile config) is an error, not a panic.
    pub fn new(params: &format::ChunkerParams) -> Result<Self, String> {
        let (min, avg, max) = (params.min_size, params.avg_size, params.max_size);
        let ok = (v2020::MINIMUM_MIN..=v2020::MINIMUM_MAX).contains(&min)
            && (v2020::AVERAGE_MIN..=v2020::AVERAGE_MAX).contains(&avg)
            && (v2020::MAXIMUM_MIN..=v2020::MAXIMUM_MAX).contains(&max)
            && min <= avg
            && avg <= max;
        if !ok {
            return Err(format!(
                "the repository's chunk sizes (min {min}, average {avg}, max {max}) are outside \
                 what FastCDC supports; the repository config is damaged"
            ));
        }
        // As `StreamCDC::new` derives them: normalisation level 1, seed 0.
        let bits = v2020::logarithm2(avg);
        let level = Normalization::Level1.bits();
        Ok(Cutter {
            min: min as usize,
            avg: avg as usize,
            max: max as usize,
            mask_s: v2020::MASKS[(bits + level) as usize],
            mask_l: v2020::MASKS[(bits - level) as usize],
            buf: Vec::new(),
            zero_cut: None,
        })
    }

    /// Reads `r` to its end and calls `each` with every chunk in order.
    /// Returns the bytes read. An error from `each` stops the read and is
    /// returned as is.
    pub fn cut<R: Read, E: From<std::io::Error>>(
        &mut self,
        r: &mut R,
        mut each: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        if self.buf.len() < BUFFER_CHUNKS * self.max {
            self.buf = vec![0; BUFFER_CHUNKS * self.max];
        }
        let (mut start, mut end, mut eof) = (0usize, 0usize, false);
        let mut total = 0u64;
        loop {
            if end - start < self.max && !eof {
                self.buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
                while end < self.buf.len() {
                    match r.read(&mut self.buf[end..]) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(n) => end += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            if start == end {
                return Ok(total);
            }
            // FastCDC looks at no more than a maximum chunk, so where the
            // next one is all zeros (holes, zeroed disk space) the cut is
            // the one it makes in zeros: the same, found by memcmp rather
            // than by rolling the hash byte by byte.
            let window = &self.buf[start..end.min(start + self.max)];
            let len = if window.len() == self.max && is_zero(window) {
                match self.zero_cut {
                    Some(c) => c,
                    None => {
                        let c = self.cut_point(window);
                        self.zero_cut = Some(c);
                        c
                    }
                }
            } else {
                self.cut_point(&self.buf[start..end])
            };
            each(&self.buf[start..start + len])?;
            start += len;
            total += len as u64;
        }
    }
}

impl Cutter {
    /// The smallest chunk the repository cuts; smaller files are one chunk.
    pub fn min_size(&self) -> usize {
        self.min
    }

    /// The largest chunk the repository cuts.
    pub fn max_size(&self) -> usize {
        self.max
    }

    fn cut_point(&self, data: &[u8]) -> usize {
        v2020::cut(
            data,
            self.min,
            self.avg,
            self.max,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
        )
        .1
    }
}

/// Compared a block at a time with memcmp, which is vectorised (a byte loop
/// with an early exit is not, and showed in perf); data that is not zero
/// almost always shows it in its first block.
pub(crate) fn is_zero(data: &[u8]) -> bool {
    static ZEROS: [u8; 4096] = [0; 4096];
    data.chunks(ZEROS.len()).all(|b| b == &ZEROS[..b.len()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, RngCore, SeedableRng};

    fn params(min: u32, avg: u32, max: u32) -> format::ChunkerParams {
        format::ChunkerParams {
            algorithm: "fastcdc-2020".into(),
            min_size: min,
            avg_size: avg,
            max_size: max,
        }
    }

    /// Reads in uneven pieces, as pipes and network file systems do.
    struct Jagged<'a>(&'a [u8], rand::rngs::StdRng);

    impl Read for Jagged<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self
                .1
                .gen_range(1..=out.len().min(70_000))
                .min(self.0.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// Existing repositories were cut by `StreamCDC`; a cut point that moved
    /// would make every file look new to dedup.
    #[test]
    fn cut_points_are_those_of_stream_cdc() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (min, avg, max) in [(256 << 10, 1 << 20, 4 << 20), (2048, 8192, 65536)] {
            let p = params(min, avg, max);
            let mut cutter = Cutter::new(&p).expect("valid sizes");
            for len in [0usize, 1, 5000, 300_000, 3_000_000, 9_000_001] {
                let mut data = vec![0u8; len];
                rng.fill_bytes(&mut data);
                // Runs of zeros, short and longer than a maximum chunk,
                // where cut points are rarer.
                if len > 100_000 {
                    data[10_000..90_000].fill(0);
                }
                if len > 8_000_000 {
                    data[1_000_000..7_500_000].fill(0);
                }
                let want: Vec<Vec<u8>> = v2020::StreamCDC::new(&data[..], min, avg, max)
                    .map(|c| c.expect("in memory").data)
                    .collect();
                let mut got = Vec::new();
                let read = cutter
                    .cut(&mut Jagged(&data, rng.clone()), |c| {
                        got.push(c.to_vec());
                        Ok::<(), std::io::Error>(())
                    })
                    .expect("in memory");
                assert_eq!(read, len as u64);
                assert_eq!(got.len(), want.len(), "chunk count, {len} bytes");
                assert!(got == want, "chunks differ, {len} bytes with {avg} average");
            }
        }
    }

    #[test]
    fn sizes_fastcdc_cannot_take_are_an_error() {
        assert!(Cutter::new(&params(16, 8192, 65536)).is_err());
        assert!(Cutter::new(&params(2048, 1 << 30, 1 << 31)).is_err());
        assert!(Cutter::new(&params(65536, 8192, 65536)).is_err());
        assert!(Cutter::new(&params(2048, 8192, 4096)).is_err());
    }

    #[test]
    fn a_read_error_and_a_callback_error_stop_the_cut() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk gone"))
            }
        }
        let mut cutter = Cutter::new(&params(2048, 8192, 65536)).expect("valid");
        let err = cutter
            .cut(&mut Failing, |_| Ok::<(), std::io::Error>(()))
            .expect_err("read error");
        assert_eq!(err.to_string(), "disk gone");
        let data = vec![1u8; 200_000];
        let mut calls = 0;
        let err = cutter
            .cut(&mut &data[..], |_| {
                calls += 1;
                Err(std::io::Error::other("stop"))
            })
            .expect_err("callback error");
        assert_eq!((err.to_string().as_str(), calls), ("stop", 1));
    }
}
