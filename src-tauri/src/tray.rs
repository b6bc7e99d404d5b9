//! The tray icon: its picture and tooltip follow the agent's status; its
//! menu is the app's quick controls.

use crate::commands::PauseFor;
use crate::{show, Page};
use agent::{Event, Status};
use chrono::{DateTime, Local, Utc};
use tauri::image::Image;
use tauri::menu::{Menu, MenuBuilder, MenuItem, MenuItemBuilder};
use tauri::tray::TrayIconBuilder;
use tauri::{AppHandle, Manager, Wry};

const TRAY: &str = "tidemark";

/// The menu item whose text shows the status line.
struct StatusLine(MenuItem<Wry>);

fn icon(status: &Status) -> Option<Image<'static>> {
    let bytes: &'static [u8] = match status {
        Status::BackingUp { .. } | Status::Restoring { .. } => {
            include_bytes!("../../icons/tray-busy.png")
        }
        Status::Paused { .. } => include_bytes!("../../icons/tray-paused.png"),
        Status::Attention { .. } | Status::WaitingForDestination { .. } | Status::NotConfigured => {
            include_bytes!("../../icons/tray-attention.png")
        }
        Status::Idle { .. } => include_bytes!("../../icons/tray-idle.png"),
    };
    Image::from_bytes(bytes).ok()
}

fn when(t: &DateTime<Utc>) -> String {
    let local = t.with_timezone(&Local);
    if local.date_naive() == Local::now().date_naive() {
        local.format("today %H:%M").to_string()
    } else {
        local.format("%a %d %b %H:%M").to_string()
    }
}

fn last(t: &Option<DateTime<Utc>>) -> String {
    t.as_ref().map_or("no backup yet".into(), |t| {
        format!("last backup {}", when(t))
    })
}

/// The one line that says what is going on (tooltip and menu).
pub fn describe(status: &Status) -> String {
    match status {
        Status::NotConfigured => "Tidemark is not set up yet".into(),
        Status::Idle { last_backup, .. } => format!("Up to date: {}", last(last_backup)),
        Status::BackingUp { progress } => match progress.bytes_total {
            Some(t) if t > 0 => format!("Backing up: {}%", (progress.bytes_done.min(t) * 100 / t)),
            _ => format!("Backing up: {} files", progress.files_done),
        },
        Status::Restoring { progress } => format!("Restoring: {} files", progress.files_done),
        Status::Paused { until, .. } => format!("Paused until {}", when(until)),
        Status::WaitingForDestination { last_backup, .. } => {
            format!(
                "Waiting for the backup disk or network ({})",
                last(last_backup)
            )
        }
        Status::Attention { message, .. } => format!("Needs attention: {message}"),
    }
}

/// What uploads do and the rule that decided it (second tooltip line).
pub fn describe_network(n: &agent::network::NetworkStatus) -> String {
    use agent::network::Uploads;
    let who = if n.from_organisation {
        " (organisation rule)"
    } else {
        ""
    };
    match &n.uploads {
        Uploads::Paused => format!("Uploads paused: {}{who}", n.rule),
        Uploads::Yielding => match n.other_traffic_mbps {
            Some(m) => format!("Uploads give way to your own traffic (now {m:.1} Mbit/s)"),
            None => "Uploads give way to your own traffic".to_string(),
        },
        Uploads::Limited { mbps } => format!("Uploads at most {mbps} Mbit/s: {}{who}", n.rule),
        Uploads::Share { percent } => {
            format!("Uploads at most {percent}% of the link: {}{who}", n.rule)
        }
        Uploads::Full => format!("Uploads at full speed: {}{who}", n.rule),
    }
}

fn tooltip(app: &AppHandle, status: &Status) -> String {
    let agent = app.state::<crate::commands::Shared>();
    format!(
        "{}\n{}",
        describe(status),
        describe_network(&agent.network())
    )
}

fn menu(app: &AppHandle, line: &MenuItem<Wry>) -> tauri::Result<Menu<Wry>> {
    MenuBuilder::new(app)
        .item(line)
        .separator()
        .item(&MenuItemBuilder::with_id("backup", "Back up now").build(app)?)
        .item(&MenuItemBuilder::with_id("pause_hour", "Pause for 1 hour").build(app)?)
        .item(&MenuItemBuilder::with_id("pause_tomorrow", "Pause until tomorrow").build(app)?)
        .item(&MenuItemBuilder::with_id("resume", "Resume").build(app)?)
        .separator()
        .item(&MenuItemBuilder::with_id("timeline", "Open timeline").build(app)?)
        .item(&MenuItemBuilder::with_id("settings", "Settings").build(app)?)
        .separator()
        .item(&MenuItemBuilder::with_id("quit", "Quit Tidemark").build(app)?)
        .build()
}

pub fn create(app: &AppHandle) -> tauri::Result<()> {
    let agent = app.state::<crate::commands::Shared>();
    let status = agent.status();
    let line = MenuItemBuilder::with_id("status", describe(&status))
        .enabled(false)
        .build(app)?;
    let m = menu(app, &line)?;
    app.manage(StatusLine(line));
    let mut b = TrayIconBuilder::with_id(TRAY)
        .menu(&m)
        .tooltip(tooltip(app, &status))
        .on_menu_event(|app, ev| {
            let agent = app.state::<crate::commands::Shared>();
            let now = Utc::now();
            match ev.id().as_ref() {
                "backup" => agent.backup_now(),
                "pause_hour" => agent.pause(PauseFor::OneHour.until(now)),
                "pause_tomorrow" => agent.pause(PauseFor::UntilTomorrow.until(now)),
                "resume" => agent.resume(),
                "timeline" => show(app, Page::Timeline),
                "settings" => show(app, Page::Settings),
                "quit" => app.exit(0),
                _ => {}
            }
        });
    if let Some(i) = icon(&status) {
        b = b.icon(i);
    }
    b.build(app)?;
    // The throttle's decision changes without an agent event (the Wi-Fi
    // network, metered, battery): the tooltip follows it within 2 s.
    let app2 = app.clone();
    std::thread::Builder::new()
        .name("tray-network".into())
        .spawn(move || {
            let mut shown = String::new();
            loop {
                std::thread::sleep(std::time::Duration::from_secs(2));
                let status = app2.state::<crate::commands::Shared>().status();
                let text = tooltip(&app2, &status);
                if text != shown {
                    if let Some(t) = app2.tray_by_id(TRAY) {
                        let _ = t.set_tooltip(Some(&text));
                    }
                    shown = text;
                }
            }
        })?;
    Ok(())
}

pub fn update(app: &AppHandle, ev: &Event) {
    let Event::Status { status } = ev else {
        return;
    };
    let text = describe(status);
    if let Some(t) = app.tray_by_id(TRAY) {
        let _ = t.set_tooltip(Some(&tooltip(app, status)));
        let _ = t.set_icon(icon(status));
    }
    if let Some(line) = app.try_state::<StatusLine>() {
        let _ = line.0.set_text(&text);
    }
}
