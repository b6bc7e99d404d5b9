//! Tree nodes from filesystem metadata, and the unchanged-file test.

use format::{EntryName, Node, NodeKind};
use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

fn ns(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

pub fn kind_of(md: &Metadata) -> NodeKind {
    let ft = md.file_type();
    if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_socket() {
        NodeKind::Socket
    } else if ft.is_char_device() {
        NodeKind::CharDevice
    } else if ft.is_block_device() {
        NodeKind::BlockDevice
    } else {
        NodeKind::File
    }
}

pub fn from_metadata(name: EntryName, md: &Metadata) -> Node {
    let kind = kind_of(md);
    Node {
        name,
        kind,
        size: if kind == NodeKind::File { md.size() } else { 0 },
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime_ns: ns(md.mtime(), md.mtime_nsec()),
        ctime_ns: ns(md.ctime(), md.ctime_nsec()),
        inode: md.ino(),
        device: md.dev(),
        content: Vec::new(),
        subtree: None,
        link_target: None,
        rdev: if matches!(kind, NodeKind::CharDevice | NodeKind::BlockDevice) {
            md.rdev()
        } else {
            0
        },
    }
}

/// The cheap test that lets a backup skip reading a file: same size,
/// modification time, change time and inode as in the previous snapshot.
/// ctime catches `touch -m` tricks and restores of old mtimes; the inode
/// catches a file replaced by another of the same size and time.
pub fn unchanged(prev: &Node, now: &Node) -> bool {
    prev.kind == NodeKind::File
        && now.kind == NodeKind::File
        && prev.size == now.size
        && prev.mtime_ns == now.mtime_ns
        && prev.ctime_ns == now.ctime_ns
        && prev.inode == now.inode
}
