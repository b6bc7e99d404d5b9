//! File-system calls on paths of any length. Linux refuses a path of
//! PATH_MAX (4,096) bytes or more with ENAMETOOLONG, yet a folder
//! hierarchy can be far deeper than that (5,000 levels of one-letter names
//! is 10,000 bytes). Backup and restore keep working with whole paths,
//! which their reports and conflict rules need; only the system calls
//! differ: a long path is opened one prefix at a time, each below the
//! limit, relative to the folder handle of the previous prefix (openat),
//! and the call is made relative to the last one.
//!
//! Resolution is the kernel's own for every prefix, so a long path means
//! exactly what it would mean if the kernel accepted it. Short paths, the
//! usual case, cost nothing extra.

use rustix::fs::{AtFlags, Mode, OFlags, Timestamps, CWD};
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

/// Paths shorter than this go to the kernel whole, the usual case. PATH_MAX
/// (4,096 with the closing NUL) would allow more, but the kernel walks
/// every component on each call: a restore of 5,000 levels spent 170 µs
/// per mkdir on 3,000-byte paths; through handles it costs a few.
const DIRECT: usize = 1_024;

/// The longest prefix opened in one step when a path is longer than
/// [`DIRECT`]: half of PATH_MAX, so a prefix always ends at a `/` well
/// before the limit even after a 255-byte name.
const HOP: usize = 2_048;

/// What may remain below a folder handle. The kernel walks every component
/// of what remains on each call, so a long remainder made a backup of
/// 5,000 levels spend seconds in the kernel; 512 bytes keeps each call
/// cheap while a new handle is needed only every few hundred levels.
const TAIL: usize = 512;

thread_local! {
    /// The folder handles last opened for long paths, each with its path,
    /// each below the one before: walks go depth first (and back up, when
    /// a restore sets folder times), so the next long path nearly always
    /// lies below one of them. There is one per [`TAIL`]-ish stretch of
    /// the deepest path seen lately: a few dozen at most.
    static HANDLES: std::cell::RefCell<Vec<(Vec<u8>, Arc<OwnedFd>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// A path split into a folder handle (none: the current folder, and the
/// path goes whole) and what remains below it.
struct At<'a> {
    dir: Option<Arc<OwnedFd>>,
    rel: &'a Path,
}

impl At<'_> {
    fn fd(&self) -> BorrowedFd<'_> {
        self.dir.as_ref().map_or(CWD, |d| d.as_fd())
    }
}

fn split(path: &Path) -> io::Result<At<'_>> {
    let b = path.as_os_str().as_bytes();
    if b.len() < DIRECT {
        return Ok(At {
            dir: None,
            rel: path,
        });
    }
    // Start from the deepest cached handle the path lies below.
    let (mut kept, mut dir, mut start) = HANDLES
        .with(|h| {
            h.borrow()
                .iter()
                .enumerate()
                .rev()
                .find_map(|(i, (p, fd))| {
                    (b.len() > p.len() && b.starts_with(p) && b[p.len()] == b'/')
                        .then(|| (i + 1, Some(Arc::clone(fd)), p.len()))
                })
        })
        .unwrap_or((0, None, 0));
    loop {
        while b.get(start) == Some(&b'/') && dir.is_some() {
            start += 1;
        }
        if b.len() - start < TAIL {
            break;
        }
        let window = &b[start..(start + HOP).min(b.len())];
        // The longest prefix that ends at a separator (not the leading
        // `/` of an absolute path: that prefix would be empty).
        let Some(cut) = window.iter().rposition(|&c| c == b'/').filter(|&i| i > 0) else {
            if b.len() - start < DIRECT {
                break; // one long last name: the kernel takes it as it is
            }
            return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        };
        let prefix = OsStr::from_bytes(&b[start..start + cut]);
        let at = dir.as_ref().map_or(CWD, |d| d.as_fd());
        let next = rustix::fs::openat(
            at,
            prefix,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let next = Arc::new(next);
        start += cut;
        let end = b[..start]
            .iter()
            .rposition(|&c| c != b'/')
            .map_or(0, |i| i + 1);
        HANDLES.with(|h| {
            let mut h = h.borrow_mut();
            h.truncate(kept);
            h.push((b[..end].to_vec(), Arc::clone(&next)));
        });
        kept += 1;
        dir = Some(next);
    }
    Ok(At {
        dir,
        rel: Path::new(OsStr::from_bytes(&b[start..])),
    })
}

/// `symlink_metadata` (lstat) for a path of any length.
pub(crate) fn lstat(path: &Path) -> io::Result<Metadata> {
    let at = split(path)?;
    if at.dir.is_none() {
        return std::fs::symlink_metadata(path);
    }
    // An O_PATH handle of the entry itself, not followed if a symlink:
    // fstat on it describes the entry as lstat would.
    let fd = rustix::fs::openat(
        at.fd(),
        at.rel,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    File::from(fd).metadata()
}

/// The names in a folder (without `.` and `..`), for a path of any length.
pub(crate) fn read_dir_names(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let at = split(path)?;
    if at.dir.is_none() {
        return std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.file_name().as_bytes().to_vec()))
            .collect();
    }
    let fd = rustix::fs::openat(
        at.fd(),
        at.rel,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for e in rustix::fs::Dir::new(fd)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    Ok(names)
}

/// Opens a file to read, for a path of any length.
pub(crate) fn open_read(path: &Path) -> io::Result<File> {
    let at = split(path)?;
    if at.dir.is_none() {
        return File::open(path);
    }
    let fd = rustix::fs::openat(
        at.fd(),
        at.rel,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(File::from(fd))
}

/// A symlink's target, for a path of any length.
pub(crate) fn read_link(path: &Path) -> io::Result<Vec<u8>> {
    let at = split(path)?;
    Ok(rustix::fs::readlinkat(at.fd(), at.rel, Vec::new())?.into_bytes())
}

/// `mkdir` (mode 0777 less the umask, as `std::fs::create_dir`).
pub(crate) fn create_dir(path: &Path) -> io::Result<()> {
    let at = split(path)?;
    Ok(rustix::fs::mkdirat(
        at.fd(),
        at.rel,
        Mode::from_raw_mode(0o777),
    )?)
}

/// Creates a new file to write, never following a symlink in its place
/// and never opening an existing file.
pub(crate) fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    let at = split(path)?;
    let fd = rustix::fs::openat(
        at.fd(),
        at.rel,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )?;
    Ok(File::from(fd))
}

/// Removes a file or symlink (not a folder).
pub(crate) fn remove_file(path: &Path) -> io::Result<()> {
    let at = split(path)?;
    Ok(rustix::fs::unlinkat(at.fd(), at.rel, AtFlags::empty())?)
}

pub(crate) fn symlink(target: &[u8], path: &Path) -> io::Result<()> {
    let at = split(path)?;
    Ok(rustix::fs::symlinkat(
        OsStr::from_bytes(target),
        at.fd(),
        at.rel,
    )?)
}

/// Sets the owner of the entry itself (a symlink is not followed).
pub(crate) fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let at = split(path)?;
    Ok(rustix::fs::chownat(
        at.fd(),
        at.rel,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// Sets permission bits (Linux cannot set them on a symlink itself).
pub(crate) fn chmod(path: &Path, mode: u32) -> io::Result<()> {
    let at = split(path)?;
    Ok(rustix::fs::chmodat(
        at.fd(),
        at.rel,
        Mode::from_raw_mode(mode),
        AtFlags::empty(),
    )?)
}

/// Sets access and modification times to `ns` nanoseconds since the
/// epoch; of the symlink itself when `link`.
pub(crate) fn set_times(path: &Path, ns: i64, link: bool) -> io::Result<()> {
    let at = split(path)?;
    let t = rustix::fs::Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000) as _,
    };
    let flags = if link {
        AtFlags::SYMLINK_NOFOLLOW
    } else {
        AtFlags::empty()
    };
    Ok(rustix::fs::utimensat(
        at.fd(),
        at.rel,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        flags,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_far_beyond_path_max_work() {
        let tmp = tempfile::tempdir().unwrap();
        let mut p = tmp.path().to_path_buf();
        // 2,000 levels of two-byte names: 6,000 bytes, well past PATH_MAX.
        for _ in 0..2_000 {
            p.push("ab");
            create_dir(&p).unwrap();
        }
        assert!(p.as_os_str().len() > 4096);
        assert!(
            std::fs::symlink_metadata(&p).is_err(),
            "the kernel alone refuses it"
        );
        assert!(lstat(&p).unwrap().is_dir());
        let f = p.join("f");
        {
            use std::io::Write;
            create_new(&f, 0o600).unwrap().write_all(b"deep").unwrap();
        }
        assert!(
            create_new(&f, 0o600).is_err(),
            "never opens an existing file"
        );
        let mut s = String::new();
        std::io::Read::read_to_string(&mut open_read(&f).unwrap(), &mut s).unwrap();
        assert_eq!(s, "deep");
        symlink(b"f", &p.join("l")).unwrap();
        assert_eq!(read_link(&p.join("l")).unwrap(), b"f");
        assert!(lstat(&p.join("l")).unwrap().file_type().is_symlink());
        let mut names = read_dir_names(&p).unwrap();
        names.sort();
        assert_eq!(names, vec![b"f".to_vec(), b"l".to_vec()]);
        chmod(&f, 0o640).unwrap();
        set_times(&f, 1_500_000_000_123_456_789, false).unwrap();
        let md = lstat(&f).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(md.mode() & 0o7777, 0o640);
        assert_eq!((md.mtime(), md.mtime_nsec()), (1_500_000_000, 123_456_789));
        remove_file(&p.join("l")).unwrap();
        assert!(lstat(&p.join("l")).is_err());
    }
}
