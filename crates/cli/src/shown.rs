//! Names from a snapshot, a repository or a server, made safe to print on
//! a terminal. File names, host names and paths may hold any byte but `/`
//! and NUL: a newline would print a fake row (in an administrator's
//! `--as-user` listing too), an escape sequence could recolour, hide or
//! rewrite what the terminal shows. Every human-readable line that carries
//! such a name passes it through [`shown`]; JSON output keeps it exact.

use std::borrow::Cow;
use std::fmt::Write;
use std::path::Path;

/// `s` with control characters written C-style (`\n`, `\t`, `\r`, `\x1b`),
/// other invisible ones that reorder or hide text as `\u{202e}`, and `\`
/// doubled so that an escape can always be told from the same characters
/// in a name.
pub fn shown(s: &str) -> Cow<'_, str> {
    // Nearly every name is printable ASCII: one pass over the bytes.
    let plain = |b: &u8| (0x20..0x7f).contains(b) && *b != b'\\';
    if s.as_bytes().iter().all(plain) || !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x80 && needs_escape(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// [`shown`] for a path (invalid UTF-8 shows as U+FFFD).
pub fn shown_path(p: &Path) -> String {
    shown(&p.to_string_lossy()).into_owned()
}

fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        // Bidirectional overrides and isolates, which reorder what follows
        // ("Trojan Source"), and the line and paragraph separators.
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_never_pass_raw() {
        assert_eq!(shown("plain name.txt"), "plain name.txt");
        assert_eq!(shown("a\nb\x1b[31m"), "a\\nb\\x1b[31m");
        assert_eq!(shown("tab\there\r"), "tab\\there\\r");
        assert_eq!(shown("back\\slash"), "back\\\\slash");
        assert_eq!(shown("\u{7f}\u{9b}x\u{202e}"), "\\x7f\\u{009b}x\\u{202e}");
        assert_eq!(shown("été 日本"), "été 日本");
        for c in (0u32..0x20).chain([0x7f]).chain(0x80..0xa0) {
            let c = char::from_u32(c).unwrap();
            assert!(!shown(&c.to_string()).contains(c), "{c:?} passed raw");
        }
    }
}
