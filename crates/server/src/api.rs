//! The HTTP API, version 1. JSON for control messages, raw bytes for packs
//! and blobs. Described in `docs/openapi.json`, served at `/v1/openapi.json`.

use crate::error::ApiError;
use crate::meta::{Principal, SnapshotRow};
use crate::{normalise_code, Server, CHALLENGE_SECONDS};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use crypto::Id;
use format::Snapshot;
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::sync::Arc;

type AppState = Arc<Server>;
type ApiResult<T> = Result<T, ApiError>;

/// Request limits; the defaults suit the protocol's own clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Ids per query or proof request.
    pub max_ids: usize,
    /// Bytes of a JSON request.
    pub max_json: usize,
    /// Bytes of a pack (a client packs ~16 MiB plus one chunk of up to 4 MiB).
    pub max_pack: usize,
    /// Bytes of a sealed snapshot object.
    pub max_snapshot: usize,
    /// Sustained requests per second per device, and the burst above it.
    pub device_rps: u32,
    pub device_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_ids: 10_000,
            max_json: 2 << 20,
            max_pack: 64 << 20,
            max_snapshot: 4 << 20,
            // A backup makes a few requests per 16 MiB of new data; 50/s
            // with bursts of 200 never slows a real client, and stops a
            // runaway or hostile one from starving the others.
            device_rps: 50,
            device_burst: 200,
        }
    }
}

type DeviceLimiter = governor::DefaultKeyedRateLimiter<i64>;

pub fn app(server: Arc<Server>, limits: Limits) -> Router {
    let json_limit = DefaultBodyLimit::max(limits.max_json);
    let per_second =
        std::num::NonZeroU32::new(limits.device_rps).unwrap_or(std::num::NonZeroU32::MIN);
    let burst = std::num::NonZeroU32::new(limits.device_burst).unwrap_or(per_second);
    let limiter: Arc<DeviceLimiter> = Arc::new(governor::RateLimiter::keyed(
        governor::Quota::per_second(per_second).allow_burst(burst),
    ));
    Router::new()
        .route("/v1/enroll", post(enroll))
        .route("/v1/whoami", get(whoami))
        .route("/v1/policy", get(policy))
        .route("/v1/chunks/query", post(query_chunks))
        .route("/v1/chunks/prove", post(prove_chunks))
        .route(
            "/v1/packs/{id}",
            put(put_pack).layer(DefaultBodyLimit::max(limits.max_pack)),
        )
        .route("/v1/blobs/{id}", get(get_blob))
        .route(
            "/v1/snapshots",
            get(list_snapshots)
                .post(commit_snapshot)
                .layer(DefaultBodyLimit::max(limits.max_snapshot)),
        )
        .route(
            "/v1/snapshots/{id}",
            get(get_snapshot).delete(device_delete_snapshot),
        )
        .route("/v1/admin/users", get(admin_users).post(admin_create_user))
        .route("/v1/admin/codes", post(admin_create_code))
        .route("/v1/admin/devices", get(admin_devices))
        .route("/v1/admin/devices/{id}/revoke", post(admin_revoke))
        .route("/v1/admin/devices/{id}/unflag", post(admin_unflag))
        .route("/v1/admin/usage", get(admin_usage))
        .route("/v1/admin/policy", put(admin_set_policy))
        .route("/v1/admin/snapshots", get(admin_snapshots))
        .route(
            "/v1/admin/snapshots/{id}",
            axum::routing::delete(admin_delete_snapshot),
        )
        .route("/v1/admin/audit", get(admin_audit))
        .route("/v1/admin/retention", post(admin_retention))
        .route("/v1/admin/prune", post(admin_prune))
        .route(
            "/v1/admin/users/{user}/snapshots",
            get(admin_user_snapshots),
        )
        .route("/v1/admin/users/{user}/blobs/{id}", get(admin_user_blob))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .merge(crate::download::routes())
        .layer(json_limit)
        .layer(axum::middleware::from_fn_with_state(
            server.clone(),
            count_requests,
        ))
        .with_state(AppState::clone(&server))
        .layer(axum::Extension(limits))
        .layer(axum::Extension(limiter))
        .layer(axum::middleware::from_fn_with_state(
            crate::limits::Guard::new(limits),
            crate::limits::guard,
        ))
}

async fn count_requests(
    State(s): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    s.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let resp = next.run(req).await;
    if resp.status().is_client_error() {
        s.metrics.rejected.fetch_add(1, Ordering::Relaxed);
    }
    resp
}

/// Runs blocking repository work (decryption, disk I/O) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

fn parse_id(s: &str) -> ApiResult<Id> {
    Id::from_hex(s).map_err(|_| ApiError::bad_request("an id is 64 hex digits"))
}

/// An authenticated device (any user).
struct Device(Principal);

/// An authenticated device of an admin user.
struct Admin(Principal);

impl FromRequestParts<AppState> for Device {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> ApiResult<Self> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(ApiError::unauthorized)?;
        let hash = s.hash_secret(b"token", token.trim());
        let meta = s.meta.clone();
        let t = s.now();
        let p = blocking(move || Ok(meta.authenticate(&hash, t)?))
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        if let Some(limiter) = parts.extensions.get::<Arc<DeviceLimiter>>() {
            if limiter.check_key(&p.device_id).is_err() {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many requests from this device; slow down and try again in a moment",
                ));
            }
        }
        Ok(Device(p))
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> ApiResult<Self> {
        let Device(p) = Device::from_request_parts(parts, s).await?;
        if !p.user.admin {
            return Err(ApiError::forbidden(
                "this needs an administrator's device token",
            ));
        }
        Ok(Admin(p))
    }
}

/// Reads a JSON body with a clear message on malformed input.
struct JsonBody<T>(T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> ApiResult<Self> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON request: {e}")))
    }
}

// ---- enrolment ---------------------------------------------------------

#[derive(Deserialize)]
struct EnrollRequest {
    code: String,
    device_name: String,
}

#[derive(Serialize)]
struct EnrollResponse {
    token: String,
    device_id: i64,
    user: String,
    admin: bool,
    /// The organisation's master keys (hex), for the device's keyring.
    keys: String,
    repository: format::RepoConfig,
}

async fn enroll(
    State(s): State<AppState>,
    JsonBody(r): JsonBody<EnrollRequest>,
) -> ApiResult<Json<EnrollResponse>> {
    let name = r.device_name.trim().to_string();
    if name.is_empty() || name.len() > 200 {
        return Err(ApiError::bad_request(
            "device_name must be 1 to 200 characters",
        ));
    }
    let code_hash = s.hash_secret(b"code", &normalise_code(&r.code));
    let s2 = s.clone();
    blocking(move || {
        let grant = s2.meta.redeem_code(&code_hash, s2.now())?.ok_or_else(|| {
            ApiError::forbidden(
                "this enrolment code is unknown, used up or expired: ask your administrator for a new one",
            )
        })?;
        let user = s2
            .meta
            .users()?
            .into_iter()
            .find(|u| u.id == grant.user_id)
            .ok_or_else(|| ApiError::internal("code of a deleted user"))?;
        let token = hex::encode(rand::random::<[u8; 32]>());
        let device_id =
            s2.meta
                .create_device(user.id, &name, &s2.hash_secret(b"token", &token), s2.now())?;
        s2.meta.audit(
            s2.now(),
            &user.name,
            "enroll",
            &format!("device {device_id} ({name})"),
        )?;
        Ok(Json(EnrollResponse {
            token,
            device_id,
            user: user.name,
            admin: user.admin,
            keys: s2.org_keys().to_string(),
            repository: s2.repo.config().clone(),
        }))
    })
    .await
}

async fn whoami(Device(p): Device) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "user": p.user.name, "admin": p.user.admin, "device_id": p.device_id
    }))
}

async fn policy(State(s): State<AppState>, Device(_): Device) -> ApiResult<impl IntoResponse> {
    let json = s.meta.policy()?.unwrap_or_else(|| "{}".into());
    Ok(([(header::CONTENT_TYPE, "application/json")], json))
}

// ---- deduplication -----------------------------------------------------

#[derive(Deserialize)]
struct QueryRequest {
    ids: Vec<Id>,
}

#[derive(Serialize, Deserialize)]
struct Challenge {
    id: Id,
    expires: i64,
    nonce: String,
}

#[derive(Serialize)]
struct QueryResponse {
    /// Chunks this user already owns: nothing to send.
    owned: Vec<Id>,
    /// Every other id, whether or not the organisation has it, so the answer
    /// reveals nothing about other users' data. Answer with a proof.
    challenges: Vec<Challenge>,
}

fn check_count(n: usize, limits: &Limits) -> ApiResult<()> {
    if n > limits.max_ids {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "at most {} ids per request; split the batch",
                limits.max_ids
            ),
        ));
    }
    Ok(())
}

async fn query_chunks(
    State(s): State<AppState>,
    axum::Extension(limits): axum::Extension<Limits>,
    Device(p): Device,
    JsonBody(r): JsonBody<QueryRequest>,
) -> ApiResult<Json<QueryResponse>> {
    check_count(r.ids.len(), &limits)?;
    s.metrics
        .ids_queried
        .fetch_add(r.ids.len() as u64, Ordering::Relaxed);
    let s2 = s.clone();
    blocking(move || {
        let usable = crate::dedup::owned_and_stored(&s2, p.user.id, &r.ids)?;
        let expires = s2.now() + CHALLENGE_SECONDS;
        let mut out = QueryResponse {
            owned: Vec::new(),
            challenges: Vec::new(),
        };
        for (id, usable) in r.ids.into_iter().zip(usable) {
            if usable {
                out.owned.push(id);
            } else {
                out.challenges.push(Challenge {
                    id,
                    expires,
                    nonce: hex::encode(s2.challenge_nonce(p.user.id, &id, expires)),
                });
            }
        }
        Ok(Json(out))
    })
    .await
}

#[derive(Deserialize)]
struct ProveRequest {
    proofs: Vec<crate::dedup::Proof>,
}

async fn prove_chunks(
    State(s): State<AppState>,
    axum::Extension(limits): axum::Extension<Limits>,
    Device(p): Device,
    JsonBody(r): JsonBody<ProveRequest>,
) -> ApiResult<Json<crate::dedup::ProveResponse>> {
    check_count(r.proofs.len(), &limits)?;
    let s2 = s.clone();
    blocking(move || {
        let out = crate::dedup::prove(&s2, p.user.id, p.device_id, r.proofs)?;
        s2.metrics
            .proofs_granted
            .fetch_add(out.granted.len() as u64, Ordering::Relaxed);
        s2.metrics
            .proofs_refused
            .fetch_add(out.upload.len() as u64, Ordering::Relaxed);
        Ok(Json(out))
    })
    .await
}

// ---- packs and blobs ---------------------------------------------------

async fn put_pack(
    State(s): State<AppState>,
    Device(p): Device,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let id = parse_id(&id)?;
    s.metrics.packs_received.fetch_add(1, Ordering::Relaxed);
    s.metrics
        .pack_bytes_received
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    let s2 = s.clone();
    blocking(move || {
        let blobs = match s2.repo.verify_pack_bytes(&id, &body) {
            Ok(b) => b,
            Err(e) => {
                s2.metrics.packs_rejected.fetch_add(1, Ordering::Relaxed);
                tracing::info!(device = p.device_id, pack = %id, error = %e, "pack rejected");
                // The repository's own advice (run verify) is for its owner,
                // not for a client whose upload was bad.
                let why = match e {
                    repository::RepoError::Corrupt { what, reason } => format!("{what}: {reason}"),
                    other => other.to_string(),
                };
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("pack rejected ({why}); nothing of it was stored, upload it again"),
                ));
            }
        };
        let ids: Vec<Id> = blobs.iter().map(|b| b.id).collect();
        let n = ids.len();
        let _gate = s2.no_prune();
        // Only blobs the index does not know yet need this pack; a retried
        // upload of a stored pack just grants ownership again.
        let known = s2
            .repo
            .has_blobs(&ids)
            .map_err(ApiError::internal)?
            .into_iter()
            .all(|k| k);
        if known {
            // Stored already (a retry, or a chunk below its sharing
            // threshold sent again). Written and synced all the same, so
            // the answer takes as long as for new data and tells nobody
            // that someone else stored it (see crate::dedup).
            crate::dedup::write_like_a_pack(&s2.scratch, &body).map_err(ApiError::internal)?;
        } else {
            s2.meta.add_uploaded(p.device_id, body.len() as u64)?;
            s2.repo
                .store_verified_pack(&id, body, blobs)
                .map_err(ApiError::internal)?;
        }
        s2.meta.grant(p.user.id, p.device_id, &ids, s2.now())?;
        Ok((
            StatusCode::CREATED,
            Json(serde_json::json!({ "pack": id, "blobs": n })),
        ))
    })
    .await
}

async fn get_blob(
    State(s): State<AppState>,
    Device(p): Device,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let id = parse_id(&id)?;
    read_blob_for(s, p.user.id, id).await
}

async fn read_blob_for(s: AppState, user_id: i64, id: Id) -> ApiResult<impl IntoResponse> {
    blocking(move || {
        if !s
            .meta
            .owned(user_id, &[id])?
            .first()
            .copied()
            .unwrap_or(false)
        {
            return Err(ApiError::not_found("chunk"));
        }
        let read = {
            let _gate = s.no_prune();
            s.repo.read_sealed_blob(&id)
        };
        let (sealed, loc) = match read {
            Ok(x) => x,
            Err(repository::RepoError::BlobNotFound(_)) => {
                return Err(ApiError::not_found("chunk"))
            }
            Err(e) => return Err(ApiError::internal(e)),
        };
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/octet-stream"),
        );
        h.insert("x-raw-length", header::HeaderValue::from(loc.raw_length));
        h.insert(
            "x-blob-kind",
            header::HeaderValue::from_static(match loc.kind {
                format::BlobKind::Tree => "tree",
                format::BlobKind::Data => "data",
            }),
        );
        Ok((h, sealed))
    })
    .await
}

// ---- snapshots ---------------------------------------------------------

async fn commit_snapshot(
    State(s): State<AppState>,
    Device(p): Device,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let s2 = s.clone();
    blocking(move || {
        let snap = s2.repo.open_sealed_snapshot(&body).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("snapshot rejected: {e}"),
            )
        })?;
        let admitted = crate::commits::admit(&s2, &p, snap.time.timestamp())?;
        // Checked and stored under the gate: a chunk an online prune
        // deleted is then seen missing, and the commit refused.
        let _gate = s2.no_prune();
        // Every pack a committed snapshot uses is listed in an index file
        // first, so the repository is complete for any reader (verify,
        // prune, a restore straight from the data folder) even after a kill.
        s2.repo.flush_ingested().map_err(ApiError::internal)?;
        let missing = crate::commits::unowned_references(&s2, p.user.id, snap.tree)?;
        if !missing.is_empty() {
            s2.metrics.snapshots_refused.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "snapshot refused: it references {} chunk(s) this user has not uploaded or proved, e.g. {}; upload them and commit again",
                    missing.len(),
                    missing[0]
                ),
            ));
        }
        let id = s2.repo.store_sealed_snapshot(&body).map_err(ApiError::internal)?;
        s2.meta.add_snapshot(
            &SnapshotRow {
                id,
                user_id: p.user.id,
                device_id: p.device_id,
                time: s2.now(),
                received_ms: s2.now_ms(),
                claimed: snap.time.timestamp(),
                suspect: admitted.suspect,
            },
            admitted.idle,
        )?;
        s2.metrics.snapshots_committed.fetch_add(1, Ordering::Relaxed);
        Ok((StatusCode::CREATED, Json(serde_json::json!({ "id": id }))))
    })
    .await
}

#[derive(Serialize)]
struct SnapshotItem {
    id: Id,
    snapshot: Snapshot,
    /// When the server received it (milliseconds since the epoch): the
    /// order of the list, and what "latest" means.
    received_ms: i64,
    /// In quarantine after a burst of commits (see `commits`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    suspect: bool,
}

/// Oldest first by the time the server received them.
fn load_items(s: &Server, rows: Vec<SnapshotRow>) -> ApiResult<Vec<SnapshotItem>> {
    rows.into_iter()
        .map(|r| {
            let snapshot = s.repo.load_snapshot(&r.id).map_err(ApiError::internal)?;
            Ok(SnapshotItem {
                id: r.id,
                snapshot,
                received_ms: r.received_ms,
                suspect: r.suspect,
            })
        })
        .collect()
}

async fn list_snapshots(
    State(s): State<AppState>,
    Device(p): Device,
) -> ApiResult<Json<Vec<SnapshotItem>>> {
    let s2 = s.clone();
    blocking(move || {
        let rows = s2.meta.snapshots(Some(p.user.id))?;
        Ok(Json(load_items(&s2, rows)?))
    })
    .await
}

async fn get_snapshot(
    State(s): State<AppState>,
    Device(p): Device,
    Path(id): Path<String>,
) -> ApiResult<Json<SnapshotItem>> {
    let id = parse_id(&id)?;
    let s2 = s.clone();
    blocking(move || match s2.meta.snapshot(&id)? {
        Some(r) if r.user_id == p.user.id => Ok(Json(
            load_items(&s2, vec![r])?
                .pop()
                .ok_or_else(|| ApiError::internal("snapshot vanished"))?,
        )),
        _ => Err(ApiError::not_found("snapshot")),
    })
    .await
}

async fn device_delete_snapshot(Device(_): Device, Path(_): Path<String>) -> ApiError {
    ApiError::forbidden(
        "devices cannot delete snapshots (so ransomware on a laptop cannot either); retention on the server or an administrator removes them",
    )
}

// ---- administration ----------------------------------------------------

#[derive(Deserialize)]
struct NewUser {
    name: String,
    #[serde(default)]
    admin: bool,
}

async fn admin_users(State(s): State<AppState>, Admin(_): Admin) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.meta.users()?))
}

async fn admin_create_user(
    State(s): State<AppState>,
    Admin(a): Admin,
    JsonBody(r): JsonBody<NewUser>,
) -> ApiResult<impl IntoResponse> {
    let name = r.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::bad_request("a user name is 1 to 100 characters"));
    }
    if s.meta.user_by_name(name)?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("user {name} already exists"),
        ));
    }
    let u = s.meta.create_user(name, r.admin)?;
    s.meta
        .audit(s.now(), &a.user.name, "create user", &u.name)?;
    Ok((StatusCode::CREATED, Json(u)))
}

#[derive(Deserialize)]
struct NewCode {
    user: String,
    /// Enrolments allowed; absent means any number until it expires.
    uses: Option<u32>,
    #[serde(default = "default_hours")]
    valid_hours: u32,
}

fn default_hours() -> u32 {
    72
}

async fn admin_create_code(
    State(s): State<AppState>,
    Admin(a): Admin,
    headers: axum::http::HeaderMap,
    uri: axum::http::Uri,
    JsonBody(r): JsonBody<NewCode>,
) -> ApiResult<impl IntoResponse> {
    if r.valid_hours == 0 || r.valid_hours > 24 * 365 {
        return Err(ApiError::bad_request("valid_hours must be 1 to 8760"));
    }
    let u = s
        .meta
        .user_by_name(&r.user)?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let code = s
        .new_code(u.id, r.uses, r.valid_hours)
        .map_err(ApiError::internal)?;
    s.meta.audit(
        s.now(),
        &a.user.name,
        "create code",
        &format!("for {} ({:?} uses, {} h)", u.name, r.uses, r.valid_hours),
    )?;
    let mut out = serde_json::json!({ "code": code, "user": u.name, "uses": r.uses,
        "expires": s.now() + i64::from(r.valid_hours) * 3600 });
    // The link and the one-line install to mail, over this connection the
    // admin's device pinned at enrolment (a request naming no Host gets
    // the code alone).
    if let Ok(base) = crate::download::base(&s, &headers, &uri) {
        let link = format!("{base}/download/{code}");
        out["install"] = crate::download::install_command(&s, &link).into();
        out["download"] = link.into();
    }
    Ok((StatusCode::CREATED, Json(out)))
}

async fn admin_devices(State(s): State<AppState>, Admin(_): Admin) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.meta.devices()?))
}

async fn admin_revoke(
    State(s): State<AppState>,
    Admin(a): Admin,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    if !s.meta.revoke_device(id)? {
        return Err(ApiError::not_found("device"));
    }
    s.meta
        .audit(s.now(), &a.user.name, "revoke device", &id.to_string())?;
    Ok(Json(serde_json::json!({ "revoked": id })))
}

/// Clears a device's flag after an administrator looked at its burst of
/// commits: its quarantined snapshots count for retention again.
async fn admin_unflag(
    State(s): State<AppState>,
    Admin(a): Admin,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    if !s.meta.unflag_device(id)? {
        return Err(ApiError::not_found("device"));
    }
    s.meta
        .audit(s.now(), &a.user.name, "clear device flag", &id.to_string())?;
    Ok(Json(serde_json::json!({ "unflagged": id })))
}

async fn admin_usage(State(s): State<AppState>, Admin(_): Admin) -> ApiResult<impl IntoResponse> {
    let s2 = s.clone();
    blocking(move || {
        let (blobs, stored, packs) = s2.repo.index_stats().map_err(ApiError::internal)?;
        let per_user = s2.meta.owned_counts()?;
        let references: u64 = per_user.iter().map(|(_, n)| n).sum();
        Ok(Json(serde_json::json!({
            "stored_bytes": stored,
            "packs": packs,
            "unique_chunks": blobs,
            "chunk_references": references,
            "dedup_ratio": if blobs == 0 { 0.0 } else { references as f64 / blobs as f64 },
            "users": per_user.into_iter().map(|(u, n)| serde_json::json!({"user": u, "chunks": n})).collect::<Vec<_>>(),
            "snapshots": s2.meta.snapshots(None)?.len(),
        })))
    })
    .await
}

async fn admin_set_policy(
    State(s): State<AppState>,
    Admin(a): Admin,
    JsonBody(v): JsonBody<serde_json::Value>,
) -> ApiResult<impl IntoResponse> {
    if !v.is_object() {
        return Err(ApiError::bad_request("a policy is a JSON object"));
    }
    s.meta.set_policy(&v.to_string())?;
    s.meta.audit(s.now(), &a.user.name, "set policy", "")?;
    Ok(Json(v))
}

#[derive(Deserialize)]
struct UserFilter {
    user: Option<String>,
}

async fn admin_snapshots(
    State(s): State<AppState>,
    Admin(_): Admin,
    Query(f): Query<UserFilter>,
) -> ApiResult<impl IntoResponse> {
    let uid = match &f.user {
        Some(name) => Some(
            s.meta
                .user_by_name(name)?
                .ok_or_else(|| ApiError::not_found("user"))?
                .id,
        ),
        None => None,
    };
    Ok(Json(s.meta.snapshots(uid)?))
}

async fn admin_delete_snapshot(
    State(s): State<AppState>,
    Admin(a): Admin,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let id = parse_id(&id)?;
    let s2 = s.clone();
    blocking(move || {
        if !s2.meta.delete_snapshot(&id)? {
            return Err(ApiError::not_found("snapshot"));
        }
        s2.repo.delete_snapshot(&id).map_err(ApiError::internal)?;
        s2.meta
            .audit(s2.now(), &a.user.name, "delete snapshot", &id.to_string())?;
        Ok(Json(serde_json::json!({ "deleted": id })))
    })
    .await
}

fn user_id(s: &Server, name: &str) -> ApiResult<i64> {
    Ok(s.meta
        .user_by_name(name)?
        .ok_or_else(|| ApiError::not_found("user"))?
        .id)
}

/// The first step of a restore on a user's behalf; it is audited.
async fn admin_user_snapshots(
    State(s): State<AppState>,
    Admin(a): Admin,
    Path(user): Path<String>,
) -> ApiResult<Json<Vec<SnapshotItem>>> {
    let s2 = s.clone();
    blocking(move || {
        let uid = user_id(&s2, &user)?;
        s2.meta.audit(
            s2.now(),
            &a.user.name,
            "restore on behalf",
            &format!("opened the snapshots of {user}"),
        )?;
        let rows = s2.meta.snapshots(Some(uid))?;
        Ok(Json(load_items(&s2, rows)?))
    })
    .await
}

async fn admin_user_blob(
    State(s): State<AppState>,
    Admin(_): Admin,
    Path((user, id)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let id = parse_id(&id)?;
    let uid = user_id(&s, &user)?;
    read_blob_for(s, uid, id).await
}

#[derive(Deserialize)]
struct RetentionRequest {
    /// The policy to apply; absent: the organisation's `"retention"`, else
    /// the timeline.
    policy: Option<repository::retention::Policy>,
    #[serde(default)]
    dry_run: bool,
}

async fn admin_retention(
    State(s): State<AppState>,
    Admin(a): Admin,
    JsonBody(r): JsonBody<RetentionRequest>,
) -> ApiResult<impl IntoResponse> {
    let s2 = s.clone();
    blocking(move || {
        let policy = r
            .policy
            .unwrap_or_else(|| crate::retention::policy(s2.meta.as_ref()));
        match crate::retention::run(&s2, &policy, r.dry_run, &a.user.name) {
            Ok(report) => Ok(Json(report)),
            Err(crate::retention::RetentionError::Empty) => Err(ApiError::bad_request(
                crate::retention::RetentionError::Empty.to_string(),
            )),
            Err(e) => Err(ApiError::internal(e)),
        }
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PruneRequest {
    /// Uploads not yet in a snapshot are kept this long (default a day).
    grace_hours: Option<u32>,
    #[serde(default)]
    dry_run: bool,
}

async fn admin_prune(
    State(s): State<AppState>,
    Admin(a): Admin,
    JsonBody(r): JsonBody<PruneRequest>,
) -> ApiResult<impl IntoResponse> {
    let s2 = s.clone();
    blocking(move || {
        let grace = r.grace_hours.unwrap_or(crate::prune::GRACE_HOURS);
        match crate::prune::run(&s2, grace, r.dry_run, &a.user.name) {
            Ok(report) => Ok(Json(report)),
            Err(e @ crate::prune::PruneError::Unreadable { .. }) => {
                Err(ApiError::new(StatusCode::CONFLICT, e.to_string()))
            }
            Err(e) => Err(ApiError::internal(e)),
        }
    })
    .await
}

async fn admin_audit(State(s): State<AppState>, Admin(_): Admin) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.meta.audit_log(1000)?))
}

async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../../../docs/openapi.json"),
    )
}

async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> ApiResult<impl IntoResponse> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !token.is_some_and(|t| s.is_metrics_token(t)) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!(
                "the metrics need the scrape token: set the contents of the server's DATA/{} as the bearer token of the scrape job",
                crate::METRICS_TOKEN_FILE
            ),
        ));
    }
    let m = &s.metrics;
    let mut out = String::new();
    for (name, help, v) in [
        ("tidemark_requests_total", "HTTP requests", &m.requests),
        (
            "tidemark_rejected_total",
            "requests answered 4xx",
            &m.rejected,
        ),
        (
            "tidemark_ids_queried_total",
            "chunk ids asked about",
            &m.ids_queried,
        ),
        (
            "tidemark_proofs_granted_total",
            "ownership proofs accepted",
            &m.proofs_granted,
        ),
        (
            "tidemark_proofs_refused_total",
            "ownership proofs refused or unknown",
            &m.proofs_refused,
        ),
        (
            "tidemark_packs_received_total",
            "pack uploads",
            &m.packs_received,
        ),
        (
            "tidemark_pack_bytes_received_total",
            "bytes of pack uploads",
            &m.pack_bytes_received,
        ),
        (
            "tidemark_packs_rejected_total",
            "packs that failed verification",
            &m.packs_rejected,
        ),
        (
            "tidemark_snapshots_committed_total",
            "snapshots committed",
            &m.snapshots_committed,
        ),
        (
            "tidemark_snapshots_refused_total",
            "snapshot commits refused",
            &m.snapshots_refused,
        ),
        (
            "tidemark_snapshots_misdated_total",
            "snapshot commits refused for a time the server's clock rules out",
            &m.snapshots_misdated,
        ),
        (
            "tidemark_snapshots_flooded_total",
            "snapshot commits refused in a burst its policy does not explain",
            &m.snapshots_flooded,
        ),
    ] {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
            v.load(Ordering::Relaxed)
        ));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}
