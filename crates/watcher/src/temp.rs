//! Names of editor, office and download temp and lock files.
//!
//! Such files come and go around every save; counting them would start a
//! batch (and so a backup) for files that are gone a moment later. They are
//! only ignored as *triggers*: a folder re-listed for another reason still
//! lists them, and whatever the backup's own exclusions say still applies.
//! The common "write a temp file, then rename it onto the real name" save is
//! still caught, through the rename's event on the real name.

use std::ffi::OsStr;

/// Whether `name` (a file name, not a path) is a temp or lock file an
/// editor, office suite or browser makes while saving or downloading.
///
/// Extensions are compared without regard to ASCII case, because Windows
/// tools write `.TMP` as often as `.tmp`.
pub fn is_temp_name(name: &OsStr) -> bool {
    // Raw bytes: names need not be UTF-8, and every pattern here is ASCII.
    let n = name.as_encoded_bytes();
    let ends = |suffix: &str| {
        n.len() > suffix.len()
            && n[n.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
    };
    let starts = |prefix: &str| n.len() > prefix.len() && n.starts_with(prefix.as_bytes());
    // vim swap files: `.x.swp`, then `.x.swo`, `.x.swn`... when one exists; a
    // swap `directory` elsewhere holds `%home%u%x.swp`.
    ends(".swp")
        || (starts(".") && (ends(".swo") || ends(".swx")))
        // vim, emacs and many tools: backup copies `x~`.
        || ends("~")
        // vim writes and deletes `4913` to probe whether it may create files in the folder.
        || n == b"4913"
        // emacs: auto-save `#x#`, lock links `.#x`.
        || (n.len() >= 2 && n.starts_with(b"#") && n.ends_with(b"#"))
        || starts(".#")
        || ends(".tmp")
        || ends(".temp")
        // Microsoft Office owner files `~$report.docx`.
        || starts("~$")
        // LibreOffice lock files `.~lock.report.odt#`.
        || (starts(".~lock.") && n.ends_with(b"#"))
        // Downloads in progress (Firefox, Chrome).
        || ends(".part")
        || ends(".crdownload")
        // GLib/GIO's atomic save (gedit, GNOME apps) writes `.goutputstream-XXXXXX`.
        || starts(".goutputstream-")
        // File-manager litter the user never asked for.
        || n == b".DS_Store"
        || n.eq_ignore_ascii_case(b"Thumbs.db")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editor_office_and_download_temp_names_are_temp() {
        for name in [
            ".notes.txt.swp",
            ".notes.txt.swo",
            ".notes.txt.swx",
            "%home%u%notes.txt.swp",
            "notes.txt~",
            "4913",
            "#notes.txt#",
            ".#notes.txt",
            "build.tmp",
            "BUILD.TMP",
            "data.temp",
            "~$report.docx",
            ".~lock.report.odt#",
            "film.mkv.part",
            "setup.exe.crdownload",
            ".goutputstream-AB12CD",
            ".DS_Store",
            "Thumbs.db",
            "thumbs.db",
        ] {
            assert!(is_temp_name(OsStr::new(name)), "{name} should be temp");
        }
    }

    #[test]
    fn ordinary_names_that_resemble_temp_names_are_not_temp() {
        for name in [
            "notes.txt",
            "x.swpx",
            "notes.swo",
            "#notes",
            "notes#",
            "tmp",
            ".tmp",
            "temp",
            "template.txt",
            "my.tmpl",
            "4913.txt",
            "49130",
            "part",
            ".part",
            "partition.img",
            "~",
            "~report.docx",
            ".~lock.report.odt",
            "DS_Store",
            "Thumbs.db.bak",
            "#",
        ] {
            assert!(!is_temp_name(OsStr::new(name)), "{name} should not be temp");
        }
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_names_are_matched_on_their_bytes() {
        use std::os::unix::ffi::OsStrExt;
        assert!(is_temp_name(OsStr::from_bytes(b"caf\xe9.tmp")));
        assert!(!is_temp_name(OsStr::from_bytes(b"caf\xe9.txt")));
    }
}
