//! File names are bytes on Unix, and a backup must keep names that are not
//! UTF-8. They are stored as a JSON string when they are valid UTF-8 (the
//! common case, readable in a dump) and as `{"hex": "..."}` otherwise.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryName(Vec<u8>);

impl EntryName {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        EntryName(bytes.into())
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
    /// For display only: invalid UTF-8 shows as U+FFFD.
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
    /// True when the name is a single safe path component: not empty, not
    /// `.` or `..`, no `/` and no NUL. Restore refuses anything else.
    pub fn is_safe_component(&self) -> bool {
        !self.0.is_empty()
            && self.0 != b"."
            && self.0 != b".."
            && !self.0.iter().any(|&b| b == b'/' || b == 0)
    }
}

impl std::fmt::Debug for EntryName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_string_lossy())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Repr {
    Utf8(String),
    Raw { hex: String },
}

impl Serialize for EntryName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => Repr::Raw {
                hex: hex::encode(&self.0),
            }
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for EntryName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Utf8(s) => Ok(EntryName(s.into_bytes())),
            Repr::Raw { hex } => hex::decode(hex)
                .map(EntryName)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_and_raw_names_round_trip() {
        for raw in [
            b"plain.txt".to_vec(),
            "übung ✓.md".as_bytes().to_vec(),
            vec![0x66, 0xff, 0xfe],
        ] {
            let n = EntryName::new(raw.clone());
            let json = serde_json::to_string(&n).unwrap();
            let back: EntryName = serde_json::from_str(&json).unwrap();
            assert_eq!(back.as_bytes(), &raw[..]);
        }
    }

    #[test]
    fn unsafe_components_are_detected() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"a\0b"] {
            assert!(!EntryName::new(bad.to_vec()).is_safe_component(), "{bad:?}");
        }
        assert!(EntryName::new(b"..a".to_vec()).is_safe_component());
    }
}
