//! The commands the UI calls: each parses, calls the agent on a blocking
//! thread (the agent does disk and network work; the UI thread must never
//! wait on it), and maps errors to a stable code plus a message.

use agent::timeline::{DirEntry, Preview, SearchHit, SnapshotInfo, Version};
use agent::{
    Agent, Config, OtherDevice, Overview, OwnStorageSetup, PasswordEntry, PasswordState,
    RestoreRequest, SetupDone, Status,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tauri::State;

/// What a failed command returns to the UI.
#[derive(Debug, Clone, Serialize, specta::Type)]
pub struct ApiError {
    /// Stable name to match on (`AgentError::code`).
    pub code: String,
    /// What happened and what the user can do, ready to show.
    pub message: String,
}

impl From<agent::AgentError> for ApiError {
    fn from(e: agent::AgentError) -> Self {
        ApiError {
            code: e.code().into(),
            message: e.to_string(),
        }
    }
}

pub type Shared = Arc<Agent>;

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> agent::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    match tauri::async_runtime::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError {
            code: "internal".into(),
            message: format!("the operation stopped unexpectedly: {e}"),
        }),
    }
}

#[derive(Debug, Clone, Copy, Deserialize, specta::Type)]
#[serde(rename_all = "snake_case")]
pub enum PauseFor {
    OneHour,
    UntilTomorrow,
}

impl PauseFor {
    /// When a pause asked for at `now` ends (the tray's menu asks the same).
    pub fn until(self, now: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
        match self {
            PauseFor::OneHour => now + chrono::Duration::hours(1),
            PauseFor::UntilTomorrow => agent::schedule::until_tomorrow(now),
        }
    }
}

#[tauri::command]
#[specta::specta]
pub fn status(agent: State<'_, Shared>) -> Status {
    agent.status()
}

/// How uploads are throttled right now, and why (settings' status page).
#[tauri::command]
#[specta::specta]
pub fn network_status(agent: State<'_, Shared>) -> agent::network::NetworkStatus {
    agent.network()
}

#[tauri::command]
#[specta::specta]
pub fn get_config(agent: State<'_, Shared>) -> Config {
    agent.config()
}

#[tauri::command]
#[specta::specta]
pub async fn set_config(agent: State<'_, Shared>, config: Config) -> Result<(), ApiError> {
    let a = agent.inner().clone();
    blocking(move || a.set_config(config)).await
}

/// The user's usual folders that exist on this machine.
#[tauri::command]
#[specta::specta]
pub fn suggested_folders() -> Vec<String> {
    agent::default_folders()
}

#[tauri::command]
#[specta::specta]
pub async fn setup_own_storage(
    agent: State<'_, Shared>,
    setup: OwnStorageSetup,
) -> Result<SetupDone, ApiError> {
    let a = agent.inner().clone();
    blocking(move || a.setup_own_storage(setup)).await
}

/// `secret_file`: where to keep the device's secret if no Secret Service
/// is reachable, set only once the user agreed to a file.
#[tauri::command]
#[specta::specta]
pub async fn enroll(
    agent: State<'_, Shared>,
    url: String,
    code: String,
    secret_file: Option<String>,
) -> Result<agent::device::Enrolled, ApiError> {
    let a = agent.inner().clone();
    blocking(move || a.enroll_keeping(&url, &code, secret_file)).await
}

/// Enters the repository password again (or a changed one): checked
/// against the repository, then kept so backups go on without asking.
#[tauri::command]
#[specta::specta]
pub async fn enter_password(
    agent: State<'_, Shared>,
    entry: PasswordEntry,
) -> Result<SetupDone, ApiError> {
    let a = agent.inner().clone();
    blocking(move || a.enter_password(entry)).await
}

/// Whether the repository password is stored on this computer.
#[tauri::command]
#[specta::specta]
pub async fn password_state(agent: State<'_, Shared>) -> Result<PasswordState, ApiError> {
    let a = agent.inner().clone();
    blocking(move || Ok(a.password_state())).await
}

/// Where a secret would be kept in a file (0600) if the user agrees, for
/// a computer without a Secret Service.
#[tauri::command]
#[specta::specta]
pub fn suggested_secret_file(agent: State<'_, Shared>, name: String) -> String {
    agent.suggested_secret_file(&name)
}

#[tauri::command]
#[specta::specta]
pub fn backup_now(agent: State<'_, Shared>) {
    agent.backup_now()
}

#[tauri::command]
#[specta::specta]
pub fn pause(agent: State<'_, Shared>, span: PauseFor) {
    agent.pause(span.until(chrono::Utc::now()))
}

#[tauri::command]
#[specta::specta]
pub fn resume(agent: State<'_, Shared>) {
    agent.resume()
}

#[tauri::command]
#[specta::specta]
pub async fn snapshots(agent: State<'_, Shared>) -> Result<Vec<SnapshotInfo>, ApiError> {
    let a = agent.inner().clone();
    blocking(move || a.snapshots()).await
}

#[tauri::command]
#[specta::specta]
pub async fn list_dir(
    agent: State<'_, Shared>,
    snapshot: String,
    path: String,
    deleted: bool,
) -> Result<Vec<DirEntry>, ApiError> {
    let a = agent.inner().clone();
    blocking(move || a.list_dir(&snapshot, &path, deleted)).await
}

#[tauri::command]
#[specta::specta]
pub async fn versions(agent: State<'_, Shared>, path: String) -> Result<Vec<Version>, ApiError> {
    let a = agent.inner().clone();
    blocking(move || a.versions(&path)).await
}

#[tauri::command]
#[specta::specta]
pub async fn search(agent: State<'_, Shared>, query: String) -> Result<Vec<SearchHit>, ApiError> {
    let a = agent.inner().clone();
    blocking(move || a.search(&query)).await
}

#[tauri::command]
#[specta::specta]
pub async fn preview(
    agent: State<'_, Shared>,
    snapshot: String,
    path: String,
) -> Result<Preview, ApiError> {
    let a = agent.inner().clone();
    blocking(move || a.preview(&snapshot, &path)).await
}

#[tauri::command]
#[specta::specta]
pub async fn restore(agent: State<'_, Shared>, request: RestoreRequest) -> Result<(), ApiError> {
    let a = agent.inner().clone();
    blocking(move || a.restore(request)).await
}

/// Why the installer's enrolment file was refused, if it was.
#[tauri::command]
#[specta::specta]
pub fn enrolment_problem(agent: State<'_, Shared>) -> Option<String> {
    agent.enrolment_problem()
}

/// Other computers of this user whose backups can be restored here.
#[tauri::command]
#[specta::specta]
pub async fn other_devices(agent: State<'_, Shared>) -> Result<Vec<OtherDevice>, ApiError> {
    let a = agent.inner().clone();
    blocking(move || a.other_devices()).await
}

#[tauri::command]
#[specta::specta]
pub async fn overview(agent: State<'_, Shared>) -> Result<Overview, ApiError> {
    let a = agent.inner().clone();
    blocking(move || a.overview()).await
}

#[tauri::command]
#[specta::specta]
pub fn get_autostart(app: tauri::AppHandle) -> bool {
    use tauri_plugin_autostart::ManagerExt;
    app.autolaunch().is_enabled().unwrap_or(false)
}

#[tauri::command]
#[specta::specta]
pub fn set_autostart(app: tauri::AppHandle, enabled: bool) -> Result<(), ApiError> {
    use tauri_plugin_autostart::ManagerExt;
    let l = app.autolaunch();
    let r = if enabled { l.enable() } else { l.disable() };
    r.map_err(|e| ApiError {
        code: "autostart".into(),
        message: format!("cannot change starting at login: {e}"),
    })
}
