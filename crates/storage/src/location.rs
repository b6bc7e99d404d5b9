//! Turning a repository location the user typed into a storage backend.
//!
//! Parsing ([`parse`]) is pure and never reads the environment; building
//! ([`open`]) adds credentials from the environment. Credentials never come
//! from the location itself, so the location can be shown, logged and stored
//! in configuration files as it is.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use opendal::services::{Sftp, Webdav, S3};
use opendal::Operator;
use url::Url;

use crate::local::LocalStorage;
use crate::remote::{PutMode, RemoteStorage};
use crate::{DynStorage, Result, StorageError};

/// S3 access key id (required for `s3://`).
pub const ENV_AWS_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
/// S3 secret access key (required for `s3://`).
pub const ENV_AWS_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
/// S3 session token of temporary credentials (optional).
pub const ENV_AWS_SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";
/// Path of the SSH private key for `sftp://` (optional: else ssh's
/// defaults and agent).
pub const ENV_SFTP_KEY: &str = "TIDEMARK_SFTP_KEY";
/// `strict` (default), `accept` or `add`: what to do with a host key that is
/// not in known_hosts.
pub const ENV_SFTP_KNOWN_HOSTS: &str = "TIDEMARK_SFTP_KNOWN_HOSTS";
/// WebDAV user (optional).
pub const ENV_WEBDAV_USER: &str = "TIDEMARK_WEBDAV_USER";
/// WebDAV password (needs the user).
pub const ENV_WEBDAV_PASSWORD: &str = "TIDEMARK_WEBDAV_PASSWORD";

/// Most S3-compatible servers accept any region and AWS's own default is
/// this one; a user of another AWS region sets `region=` explicitly.
const DEFAULT_S3_REGION: &str = "us-east-1";

/// A parsed location, without any credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    Local(PathBuf),
    S3 {
        bucket: String,
        /// Segments joined by `/`, possibly empty.
        prefix: String,
        endpoint: Option<String>,
        region: String,
        path_style: bool,
    },
    Sftp {
        user: Option<String>,
        host: String,
        port: Option<u16>,
        /// Absolute, starting with `/`.
        path: String,
    },
    Webdav {
        /// `http://host[:port]` or `https://…`.
        endpoint: String,
        /// Absolute, starting with `/`.
        path: String,
    },
}

/// Opens the repository storage at `location`:
/// - a folder path (absolute or relative) or `file:///path`;
/// - `s3://bucket/prefix?endpoint=http://host:9000&region=us-east-1&path_style=true`,
///   credentials from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
///   optionally `AWS_SESSION_TOKEN`;
/// - `sftp://user@host:port/absolute/path`, the private key from
///   `TIDEMARK_SFTP_KEY` (a file path) or else ssh's defaults and agent, host
///   key checking from `TIDEMARK_SFTP_KNOWN_HOSTS=strict|accept|add`
///   (default `strict`);
/// - `webdav://host:port/path` (HTTP) or `webdavs://…` (HTTPS), credentials
///   from `TIDEMARK_WEBDAV_USER` and `TIDEMARK_WEBDAV_PASSWORD`.
///
/// Nothing is contacted here; a wrong host or credential shows up on the
/// first operation.
pub fn open(location: &str) -> Result<DynStorage> {
    let shown = redact(location);
    let invalid = |reason: String| StorageError::InvalidLocation {
        location: shown.clone(),
        reason,
    };
    match parse(location)? {
        Location::Local(path) => Ok(Arc::new(LocalStorage::new(path)?)),
        Location::S3 {
            bucket,
            prefix,
            endpoint,
            region,
            path_style,
        } => {
            let (Some(ak), Some(sk)) = (
                env_nonempty(ENV_AWS_ACCESS_KEY_ID),
                env_nonempty(ENV_AWS_SECRET_ACCESS_KEY),
            ) else {
                return Err(invalid(format!(
                    "S3 credentials are missing: set {ENV_AWS_ACCESS_KEY_ID} and {ENV_AWS_SECRET_ACCESS_KEY} in the environment"
                )));
            };
            // Only the credentials given here are used: no ~/.aws files, no
            // instance metadata, no other AWS_* variables that could point a
            // backup at a place the user did not name.
            let mut b = S3::default()
                .bucket(&bucket)
                .root(&format!("/{prefix}"))
                .region(&region)
                .disable_config_load()
                .disable_ec2_metadata()
                .access_key_id(&ak)
                .secret_access_key(&sk);
            if let Some(token) = env_nonempty(ENV_AWS_SESSION_TOKEN) {
                b = b.session_token(&token);
            }
            if let Some(endpoint) = &endpoint {
                b = b.endpoint(endpoint);
            }
            if !path_style {
                b = b.enable_virtual_host_style();
            }
            remote(b, shown.clone(), PutMode::Direct).map_err(|e| invalid(e.to_string()))
        }
        Location::Sftp {
            user,
            host,
            port,
            path,
        } => {
            let strategy = match env_nonempty(ENV_SFTP_KNOWN_HOSTS).as_deref() {
                None | Some("strict") => "strict",
                Some("accept") => "accept",
                Some("add") => "add",
                Some(other) => {
                    return Err(invalid(format!(
                        "{ENV_SFTP_KNOWN_HOSTS}='{other}' is not one of strict, accept, add"
                    )))
                }
            };
            let endpoint = match port {
                Some(p) => format!("ssh://{host}:{p}"),
                None => format!("ssh://{host}"),
            };
            let mut b = Sftp::default()
                .endpoint(&endpoint)
                .root(&path)
                .known_hosts_strategy(strategy);
            if let Some(user) = &user {
                b = b.user(user);
            }
            if let Some(key) = env_nonempty(ENV_SFTP_KEY) {
                if !std::path::Path::new(&key).is_file() {
                    return Err(invalid(format!(
                        "{ENV_SFTP_KEY} names '{key}', which is not a readable file"
                    )));
                }
                b = b.key(&key);
            }
            remote(b, shown.clone(), PutMode::TempThenRename).map_err(|e| invalid(e.to_string()))
        }
        Location::Webdav { endpoint, path } => {
            let user = env_nonempty(ENV_WEBDAV_USER);
            let password = env_nonempty(ENV_WEBDAV_PASSWORD);
            let mut b = Webdav::default()
                .endpoint(&endpoint)
                .root(&path)
                .disable_create_dir(true);
            match (user, password) {
                (Some(u), Some(p)) => b = b.username(&u).password(&p),
                (Some(u), None) => b = b.username(&u),
                (None, Some(_)) => {
                    return Err(invalid(format!(
                        "{ENV_WEBDAV_PASSWORD} is set but {ENV_WEBDAV_USER} is not"
                    )))
                }
                (None, None) => {}
            }
            remote(b, shown.clone(), PutMode::DirectMakingDirs).map_err(|e| invalid(e.to_string()))
        }
    }
}

fn remote(
    builder: impl opendal::Builder,
    location: String,
    put_mode: PutMode,
) -> opendal::Result<DynStorage> {
    // Installs OpenDAL's reqwest transport as the process default (the
    // first call wins; later ones are no-ops). Done here rather than through
    // OpenDAL's link-time constructor, which is left disabled.
    // reqwest is built without a crypto provider of its own (see Cargo.toml);
    // ring becomes the process default unless something installed one first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    opendal::init_default_registry();
    opendal_http_transport_reqwest::install_default();
    let op = Operator::new(builder)?;
    Ok(Arc::new(RemoteStorage::new(op, location, put_mode)))
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The location as it may be shown: a password typed into the URL against
/// the rules is replaced, so even the error that rejects it cannot leak it.
pub(crate) fn redact(location: &str) -> String {
    match Url::parse(location) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        _ => location.to_string(),
    }
}

/// Parses a location without touching the environment or the network.
pub(crate) fn parse(location: &str) -> Result<Location> {
    let shown = redact(location);
    let invalid = |reason: &str| StorageError::InvalidLocation {
        location: shown.clone(),
        reason: reason.to_string(),
    };
    if location.trim().is_empty() {
        return Err(invalid(
            "the location is empty: give a folder path or a URL",
        ));
    }
    if !location.contains("://") {
        return Ok(Location::Local(PathBuf::from(location)));
    }
    let url = Url::parse(location).map_err(|e| invalid(&format!("not a valid URL: {e}")))?;
    if url.password().is_some() {
        return Err(invalid(
            "never put a password in the location; credentials come from environment variables",
        ));
    }
    if url.fragment().is_some() {
        return Err(invalid("a location cannot have a '#' part"));
    }
    match url.scheme() {
        "file" => {
            if url.query().is_some() {
                return Err(invalid("file:// locations take no '?' options"));
            }
            let path = url.to_file_path().map_err(|()| {
                invalid("a file:// URL must be file:///absolute/path on this machine")
            })?;
            Ok(Location::Local(path))
        }
        "s3" => parse_s3(&url, &invalid),
        "sftp" => {
            let host = url
                .host_str()
                .filter(|h| !h.is_empty())
                .ok_or_else(|| invalid("an sftp:// location needs a host: sftp://user@host:port/path"))?;
            if url.query().is_some() {
                return Err(invalid("sftp:// locations take no '?' options"));
            }
            let segments = path_segments(&url, &invalid)?;
            if segments.is_empty() {
                return Err(invalid(
                    "an sftp:// location needs the absolute path of the repository folder on the server",
                ));
            }
            Ok(Location::Sftp {
                user: Some(url.username().to_string()).filter(|u| !u.is_empty()),
                host: host.to_string(),
                port: url.port(),
                path: format!("/{}", segments.join("/")),
            })
        }
        scheme @ ("webdav" | "webdavs") => {
            let host = url
                .host_str()
                .filter(|h| !h.is_empty())
                .ok_or_else(|| invalid("a webdav:// location needs a host: webdav://host:port/path"))?;
            if !url.username().is_empty() {
                return Err(invalid(
                    "put the WebDAV user in TIDEMARK_WEBDAV_USER, not in the location",
                ));
            }
            if url.query().is_some() {
                return Err(invalid("webdav:// locations take no '?' options"));
            }
            let http = if scheme == "webdav" { "http" } else { "https" };
            let endpoint = match url.port() {
                Some(p) => format!("{http}://{host}:{p}"),
                None => format!("{http}://{host}"),
            };
            let segments = path_segments(&url, &invalid)?;
            Ok(Location::Webdav {
                endpoint,
                path: format!("/{}", segments.join("/")),
            })
        }
        other => Err(invalid(&format!(
            "unknown scheme '{other}://': use a folder path, file://, s3://, sftp://, webdav:// or webdavs://"
        ))),
    }
}

fn parse_s3(url: &Url, invalid: &dyn Fn(&str) -> StorageError) -> Result<Location> {
    let bucket = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| invalid("an s3:// location needs a bucket: s3://bucket/prefix"))?;
    if !url.username().is_empty() {
        return Err(invalid(
            "S3 credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, not from the location",
        ));
    }
    if url.port().is_some() {
        return Err(invalid(
            "s3://bucket takes no port; give the server as ?endpoint=http://host:port",
        ));
    }
    let segments = path_segments(url, invalid)?;
    let mut options: HashMap<String, String> = HashMap::new();
    for (k, v) in url.query_pairs() {
        if options.insert(k.to_string(), v.to_string()).is_some() {
            return Err(invalid(&format!("the option '{k}' is given twice")));
        }
    }
    let endpoint = match options.remove("endpoint") {
        None => None,
        Some(e) => {
            let parsed = Url::parse(&e)
                .map_err(|err| invalid(&format!("endpoint '{e}' is not a URL: {err}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(invalid(&format!(
                    "endpoint '{e}' must look like http://host:port or https://host"
                )));
            }
            if !parsed.username().is_empty() || parsed.password().is_some() {
                return Err(invalid(
                    "the endpoint cannot carry credentials; use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                ));
            }
            Some(e.trim_end_matches('/').to_string())
        }
    };
    let region = match options.remove("region") {
        None => DEFAULT_S3_REGION.to_string(),
        Some(r) if !r.is_empty() => r,
        Some(_) => return Err(invalid("region is empty")),
    };
    let path_style = match options.remove("path_style").as_deref() {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(invalid(&format!(
                "path_style must be true or false, not '{other}'"
            )))
        }
    };
    if let Some(k) = options.keys().next() {
        return Err(invalid(&format!(
            "unknown option '{k}': s3:// takes endpoint, region and path_style"
        )));
    }
    Ok(Location::S3 {
        bucket: bucket.to_string(),
        prefix: segments.join("/"),
        endpoint,
        region,
        path_style,
    })
}

/// The decoded, non-empty path segments of `url`. A trailing `/` is fine;
/// empty, `.` and `..` segments are not, because each would make two
/// spellings name one place, or climb out of it.
fn path_segments(url: &Url, invalid: &dyn Fn(&str) -> StorageError) -> Result<Vec<String>> {
    let Some(raw) = url.path_segments() else {
        return Ok(Vec::new());
    };
    let raw: Vec<&str> = raw.collect();
    let last = raw.len().saturating_sub(1);
    let mut out = Vec::new();
    for (i, seg) in raw.into_iter().enumerate() {
        if seg.is_empty() {
            if i == last {
                continue;
            }
            return Err(invalid("the path has an empty segment ('//')"));
        }
        let seg = percent_decode(seg)
            .ok_or_else(|| invalid("the path is not valid percent-encoded UTF-8"))?;
        if seg == "." || seg == ".." || seg.contains('/') || seg.chars().any(char::is_control) {
            return Err(invalid(
                "the path may not contain '.', '..', encoded '/' or control characters as segments",
            ));
        }
        if seg.starts_with('~') {
            return Err(invalid(
                "'~' paths are not supported; give the absolute path",
            ));
        }
        out.push(seg);
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(location: &str) -> String {
        match parse(location) {
            Err(StorageError::InvalidLocation { reason, .. }) => reason,
            other => panic!("expected InvalidLocation for {location}, got {other:?}"),
        }
    }

    #[test]
    fn plain_paths_and_file_urls_are_local() {
        assert_eq!(
            parse("/srv/backup").ok(),
            Some(Location::Local("/srv/backup".into()))
        );
        assert_eq!(
            parse("relative/dir").ok(),
            Some(Location::Local("relative/dir".into()))
        );
        assert_eq!(
            parse("file:///media/usb/My%20Backup").ok(),
            Some(Location::Local("/media/usb/My Backup".into()))
        );
        assert!(reason("file://otherhost/x").contains("file:///"));
        assert!(reason("").contains("empty"));
    }

    #[test]
    fn s3_with_options() {
        let loc = parse(
            "s3://bucket/a/b?endpoint=http://127.0.0.1:9000&region=eu-west-1&path_style=true",
        );
        assert_eq!(
            loc.ok(),
            Some(Location::S3 {
                bucket: "bucket".into(),
                prefix: "a/b".into(),
                endpoint: Some("http://127.0.0.1:9000".into()),
                region: "eu-west-1".into(),
                path_style: true,
            })
        );
        let loc = parse("s3://bucket?path_style=false");
        assert_eq!(
            loc.ok(),
            Some(Location::S3 {
                bucket: "bucket".into(),
                prefix: String::new(),
                endpoint: None,
                region: DEFAULT_S3_REGION.into(),
                path_style: false,
            })
        );
    }

    #[test]
    fn s3_rejects_credentials_and_unknown_options() {
        assert!(reason("s3://AKIA:secret@bucket/p").contains("password"));
        assert!(reason("s3://AKIA@bucket/p").contains("AWS_ACCESS_KEY_ID"));
        assert!(reason("s3://bucket/p?foo=1").contains("unknown option 'foo'"));
        assert!(reason("s3://bucket/p?region=a&region=b").contains("twice"));
        assert!(reason("s3://bucket/p?path_style=yes").contains("path_style"));
        assert!(reason("s3://bucket/p?endpoint=ftp://x").contains("endpoint"));
        assert!(reason("s3://bucket/p?endpoint=http://u:p@x").contains("credentials"));
        assert!(reason("s3://bucket:9000/p").contains("port"));
        assert!(reason("s3:///p").contains("bucket"));
        assert!(reason("s3://bucket/a%2Fb").contains("encoded '/'"));
        // Dot segments are resolved by URL rules before we see the path.
        assert!(matches!(
            parse("s3://bucket/a/../b"),
            Ok(Location::S3 { prefix, .. }) if prefix == "b"
        ));
    }

    #[test]
    fn a_rejected_password_is_never_shown() {
        for loc in [
            "s3://AKIA:hunter2@bucket/p",
            "webdav://u:hunter2@h/p",
            "sftp://u:hunter2@h/p",
        ] {
            match parse(loc) {
                Err(e) => assert!(!e.to_string().contains("hunter2"), "{e}"),
                Ok(l) => panic!("{loc} parsed as {l:?}"),
            }
        }
    }

    #[test]
    fn sftp_user_host_port_path() {
        assert_eq!(
            parse("sftp://alice@example.org:2222/srv/backup/").ok(),
            Some(Location::Sftp {
                user: Some("alice".into()),
                host: "example.org".into(),
                port: Some(2222),
                path: "/srv/backup".into(),
            })
        );
        assert_eq!(
            parse("sftp://example.org/srv").ok(),
            Some(Location::Sftp {
                user: None,
                host: "example.org".into(),
                port: None,
                path: "/srv".into(),
            })
        );
        assert!(reason("sftp://example.org").contains("absolute path"));
        assert!(reason("sftp://example.org/~/x").contains("'~'"));
        assert!(reason("sftp://example.org/a//b").contains("empty segment"));
        assert!(reason("sftp://example.org/a?x=1").contains("no '?'"));
    }

    #[test]
    fn webdav_and_webdavs() {
        assert_eq!(
            parse("webdav://127.0.0.1:8080/dav/repo").ok(),
            Some(Location::Webdav {
                endpoint: "http://127.0.0.1:8080".into(),
                path: "/dav/repo".into(),
            })
        );
        assert_eq!(
            parse("webdavs://cloud.example.org/remote.php/dav/files/me/Backup%201").ok(),
            Some(Location::Webdav {
                endpoint: "https://cloud.example.org".into(),
                path: "/remote.php/dav/files/me/Backup 1".into(),
            })
        );
        assert!(reason("webdav://me@host/x").contains("TIDEMARK_WEBDAV_USER"));
    }

    #[test]
    fn unknown_schemes_name_the_supported_ones() {
        assert!(reason("ftp://host/x").contains("s3://"));
    }
}
