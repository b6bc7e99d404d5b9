//! The download pages: what an employee opens from the link an admin
//! mailed out (`/download/CODE`): the per-user installer and a small
//! enrolment file signed with the organisation's key, carrying this
//! server's address, its certificate fingerprint and the code. Nothing here
//! uses the code up; enrolling does. The files offered (the app, the CLI,
//! the icon) come from the folder given with `--downloads`.

use crate::error::ApiError;
use crate::{normalise_code, Server};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use format::enrolment::{EnrolmentFile, ENROLMENT_FILE};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// The per-user installer; the server puts its settings in front of it.
const INSTALLER: &str = include_str!("../../../installers/linux/install.sh");

pub(crate) fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route("/v1/org-key", get(org_key))
        .route("/v1/update", get(update))
        .route("/download/files", get(files))
        .route("/download/files/{name}", get(file))
        .route("/download/{code}", get(page))
        .route("/download/{code}/install.sh", get(installer))
        .route("/download/{code}/{file}", get(enrolment))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// This server's address as the device asked for it: the Host header
/// (HTTP/1.1) or the request's authority (HTTP/2).
pub(crate) fn base(s: &Server, headers: &HeaderMap, uri: &Uri) -> Result<String, ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .ok_or_else(|| ApiError::bad_request("the request names no valid Host"))?;
    let scheme = match s.published().scheme.as_str() {
        "" => "https".to_string(),
        other => other.to_string(),
    };
    Ok(format!("{scheme}://{host}"))
}

/// The one line that installs Tidemark from a code's download link. Over
/// TLS it pins this server's public key: `-k` only stops curl asking a
/// certificate authority about a self-signed certificate; the pin then
/// accepts this server's key and no other. An administrator can mail the
/// line itself (the admin API returns it), so the trust a new laptop
/// places in the download rests on that mail, not on a browser warning
/// clicked away.
pub(crate) fn install_command(s: &Server, code_url: &str) -> String {
    let pin = s.published().key_pin;
    if pin.is_empty() {
        format!("curl -fsS {code_url}/install.sh | sh")
    } else {
        format!("curl -fsSk --pinnedpubkey sha256//{pin} {code_url}/install.sh | sh")
    }
}

/// The user a code that can still enrol belongs to, and its expiry.
fn valid(s: &Server, code: &str) -> Result<(String, i64), ApiError> {
    let refused = || {
        ApiError::forbidden(
            "this download link is unknown, used up or expired: ask your administrator for a new one",
        )
    };
    if code.len() > 64 {
        return Err(refused());
    }
    let hash = s.hash_secret(b"code", &normalise_code(code));
    let (user_id, expires) = s.meta.peek_code(&hash, now())?.ok_or_else(refused)?;
    let user = s
        .meta
        .users()?
        .into_iter()
        .find(|u| u.id == user_id)
        .ok_or_else(refused)?;
    Ok((user.name, expires))
}

async fn org_key(State(s): State<Arc<Server>>) -> impl IntoResponse {
    axum::Json(serde_json::json!({ "public_key": s.org_public_key() }))
}

/// The offered files: name and SHA-256, which the installer checks.
fn offered(s: &Server) -> Vec<(String, String)> {
    let Some(dir) = s.published().downloads else {
        return Vec::new();
    };
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| safe_name(n))
        .filter_map(|n| {
            let sum = sha256_of(&dir.join(&n))?;
            Some((n, sum))
        })
        .collect();
    out.sort();
    out
}

/// SHA-256 of an offered file, computed once per version of it (size and
/// modification time): the programs are large, and every installer and
/// every device's update check lists them.
fn sha256_of(path: &std::path::Path) -> Option<String> {
    type Sums = HashMap<PathBuf, (u64, std::time::SystemTime, String)>;
    static SUMS: OnceLock<Mutex<Sums>> = OnceLock::new();
    let md = std::fs::metadata(path).ok()?;
    let stamp = (md.len(), md.modified().ok()?);
    let sums = SUMS.get_or_init(Default::default);
    if let Some((len, mtime, sum)) = sums.lock().unwrap_or_else(|p| p.into_inner()).get(path) {
        if (*len, *mtime) == stamp {
            return Some(sum.clone());
        }
    }
    let sum = crypto::sha256_hex(&std::fs::read(path).ok()?);
    sums.lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(path.to_path_buf(), (stamp.0, stamp.1, sum.clone()));
    Some(sum)
}

fn safe_name(n: &str) -> bool {
    !n.is_empty()
        && !n.starts_with('.')
        && n.len() <= 100
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

async fn files(State(s): State<Arc<Server>>) -> impl IntoResponse {
    let list: Vec<_> = offered(&s)
        .into_iter()
        .map(|(name, sha256)| serde_json::json!({ "name": name, "sha256": sha256 }))
        .collect();
    axum::Json(list)
}

async fn file(State(s): State<Arc<Server>>, Path(name): Path<String>) -> Response {
    let dir = s.published().downloads;
    match dir.filter(|_| safe_name(&name)).map(|d| d.join(&name)) {
        Some(p) => match tokio::fs::read(&p).await {
            Ok(bytes) => {
                ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
            }
            Err(_) => ApiError::not_found("download").into_response(),
        },
        None => ApiError::not_found("download").into_response(),
    }
}

async fn page(
    State(s): State<Arc<Server>>,
    Path(code): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Html<String>, ApiError> {
    let (user, expires) = valid(&s, &code)?;
    let base = base(&s, &headers, &uri)?;
    let until = chrono::DateTime::from_timestamp(expires, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default();
    // The code as the server reads it (letters and digits only), never as
    // the link spelled it: whatever else a crafted link carries must reach
    // neither the page nor the shell command a person copies from it.
    let code_url = format!("{base}/download/{}", crate::canonical_code(&code));
    let command = html_escape(&install_command(&s, &code_url));
    let code_url = html_escape(&code_url);
    let fp = html_escape(&s.published().fingerprint);
    let until = html_escape(&until);
    Ok(Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Tidemark for {user}</title></head>\
         <body><h1>Tidemark for {user}</h1>\
         <p>Install Tidemark for your account, without an administrator. It enrols this computer with your company's \
         backup server and starts protecting your documents.</p>\
         <h2>Linux</h2><pre>{command}</pre>\
         <p>or download <a href=\"{code_url}/install.sh\">install.sh</a> and run <code>sh install.sh</code>.</p>\
         <p>The link works until {until} and enrols one computer. The server's certificate fingerprint is \
         <code>{fp}</code>.</p>\
         <p><a href=\"{code_url}/{ENROLMENT_FILE}\">Enrolment file</a> (the installer fetches it for you).</p>\
         </body></html>",
        user = html_escape(&user),
    )))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn signed(
    s: &Server,
    code: &str,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<EnrolmentFile, ApiError> {
    let (user, expires) = valid(s, code)?;
    Ok(EnrolmentFile::sign(
        &s.signing,
        &base(s, headers, uri)?,
        &s.published().fingerprint,
        code,
        &user,
        expires,
    ))
}

async fn enrolment(
    State(s): State<Arc<Server>>,
    Path((code, file)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    if file != ENROLMENT_FILE {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such download"));
    }
    let f = signed(&s, &code, &headers, &uri)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"enrolment.tidemark\"",
            ),
        ],
        serde_json::to_vec_pretty(&f).map_err(ApiError::internal)?,
    )
        .into_response())
}

/// The installer with this server's settings in front: where to download
/// from, the files with their SHA-256 (checked before anything is
/// installed), the organisation's public key and the enrolment file.
async fn installer(
    State(s): State<Arc<Server>>,
    Path(code): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let f = signed(&s, &code, &headers, &uri)?;
    let files: Vec<String> = offered(&s)
        .into_iter()
        .map(|(n, h)| format!("{h}  {n}"))
        .collect();
    // Base64, so no byte of the file can end the shell string early.
    let enrolment = base64::engine::general_purpose::STANDARD
        .encode(serde_json::to_vec(&f).map_err(ApiError::internal)?);
    let settings = format!(
        "#!/bin/sh\n# Settings from {base}, put here by the server.\n\
         TIDEMARK_DOWNLOAD='{base}/download/files'\n\
         TIDEMARK_ORG_KEY='{key}'\n\
         TIDEMARK_PIN='{pin}'\n\
         TIDEMARK_FILES='{files}'\n\
         TIDEMARK_ENROLMENT='{enrolment}'\n",
        base = f.server,
        key = s.org_public_key(),
        pin = s.published().key_pin,
        files = files.join("\n"),
        enrolment = enrolment,
    );
    let body = format!("{settings}{}", INSTALLER.trim_start_matches("#!/bin/sh\n"));
    Ok((
        [(header::CONTENT_TYPE, "text/x-shellscript; charset=utf-8")],
        body,
    )
        .into_response())
}

#[derive(serde::Deserialize)]
struct UpdateQuery {
    platform: String,
}

/// The update on offer for `platform`: the version in `DOWNLOADS/VERSION`
/// with the offered files' checksums, signed with the organisation key;
/// none when the organisation's policy pins another version
/// (`"app_version"`), or nothing is offered for that platform.
async fn update(
    State(s): State<Arc<Server>>,
    axum::extract::Query(q): axum::extract::Query<UpdateQuery>,
) -> Result<Response, ApiError> {
    use format::update::{UpdateFile, UpdateOffer};
    let pinned = s
        .meta
        .policy()?
        .and_then(|p| serde_json::from_str::<serde_json::Value>(&p).ok())
        .and_then(|p| {
            p.get("app_version")
                .and_then(|v| v.as_str())
                .map(String::from)
        });
    let version = s
        .published()
        .downloads
        .and_then(|d| std::fs::read_to_string(d.join("VERSION")).ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty());
    let offer = match version {
        Some(v) if q.platform == "linux-x86_64" && pinned.as_ref().is_none_or(|p| *p == v) => {
            let files = offered(&s)
                .into_iter()
                .filter(|(n, _)| n != "VERSION")
                .map(|(name, sha256)| UpdateFile { name, sha256 })
                .collect();
            Some(UpdateOffer::sign(&s.signing, &v, &q.platform, files))
        }
        _ => None,
    };
    Ok(axum::Json(serde_json::json!({ "offer": offer, "pinned": pinned })).into_response())
}
