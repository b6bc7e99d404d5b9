//! When to back up: a pure function of the settings, what happened so far
//! and the time, so it is tested with made-up clocks. Wall-clock times are
//! compared (not a monotonic timer), so a laptop that slept through its
//! hourly backup runs it as soon as it wakes.

use chrono::{DateTime, Duration, Local, NaiveTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// Why backups are paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum PauseReason {
    /// The user asked from the tray or the app.
    User,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Pause {
    pub until: DateTime<Utc>,
    pub reason: PauseReason,
}

/// What the scheduler remembers between runs (persisted by the agent, so a
/// restart neither forgets a pause nor backs up twice).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunState {
    pub last_success: Option<DateTime<Utc>>,
    pub last_attempt: Option<DateTime<Utc>>,
    /// Failed attempts since the last success.
    pub failures: u32,
    /// The last failure's message, for the tray and the status page.
    pub last_error: Option<String>,
    /// The last failure was a destination that is not there (unplugged
    /// disk, no network): retry soon and quietly.
    pub destination_missing: bool,
    pub pause: Option<Pause>,
    /// "Back up now" was asked and not yet done (kept across a restart).
    pub requested: bool,
    /// When unused data was last deleted from own storage.
    pub last_prune: Option<DateTime<Utc>>,
    /// When the company server was last asked for an update.
    pub last_update_check: Option<DateTime<Utc>>,
    /// The last version installed by an update. Not installed again: a
    /// build that calls itself older than it was offered as would otherwise
    /// be installed, restarted into, and installed again without end.
    pub installed_update: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    RunNow,
    /// Nothing to do before this time.
    WaitUntil(DateTime<Utc>),
    /// Paused until this time (then the schedule resumes by itself).
    Paused(DateTime<Utc>),
    /// Backups run only on demand and none is asked for.
    Idle,
}

/// How often a missing destination is looked for again.
pub const DESTINATION_RETRY: Duration = Duration::seconds(30);
/// The longest wait after repeated failures: a broken backup must not go
/// unretried for long, nor hammer a server that is down.
pub const MAX_BACKOFF: Duration = Duration::minutes(30);

/// Backoff after `failures` consecutive failures: 1, 2, 4 … minutes, capped.
pub fn backoff(failures: u32) -> Duration {
    let minutes = 1i64 << failures.saturating_sub(1).min(10);
    Duration::minutes(minutes).min(MAX_BACKOFF)
}

/// `destination_retry`: how soon to look again for a missing destination
/// (normally [`DESTINATION_RETRY`]).
pub fn next(
    every_minutes: u32,
    s: &RunState,
    now: DateTime<Utc>,
    destination_retry: Duration,
) -> Next {
    if let Some(p) = s.pause {
        if now < p.until {
            return Next::Paused(p.until);
        }
    }
    if s.failures > 0 {
        let wait = if s.destination_missing {
            destination_retry
        } else {
            backoff(s.failures)
        };
        let retry = s.last_attempt.map_or(now, |t| t + wait);
        return if now >= retry {
            Next::RunNow
        } else {
            Next::WaitUntil(retry)
        };
    }
    if s.requested {
        return Next::RunNow;
    }
    if every_minutes == 0 {
        return Next::Idle;
    }
    let due = match s.last_success {
        // The first backup starts when the user finishes the setup (a
        // request), not the moment a destination is saved half-way through.
        None => return Next::Idle,
        Some(t) => t + Duration::minutes(i64::from(every_minutes)),
    };
    if now >= due {
        Next::RunNow
    } else {
        Next::WaitUntil(due)
    }
}

/// "Pause until tomorrow": 08:00 local time on the next day.
pub fn tomorrow_morning<Tz: TimeZone>(now: DateTime<Tz>) -> DateTime<Utc> {
    let tz = now.timezone();
    let day = now.date_naive() + chrono::Days::new(1);
    let at = day.and_time(NaiveTime::from_hms_opt(8, 0, 0).unwrap_or_default());
    tz.from_local_datetime(&at)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        // A day whose 08:00 does not exist (a DST jump) gets 24 hours.
        .unwrap_or_else(|| now.with_timezone(&Utc) + Duration::hours(24))
}

/// The pause for the tray's "until tomorrow", in the machine's time zone.
pub fn until_tomorrow(now: DateTime<Utc>) -> DateTime<Utc> {
    tomorrow_morning(now.with_timezone(&Local))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, FixedOffset};

    fn nx(every: u32, s: &RunState, now: DateTime<Utc>) -> Next {
        next(every, s, now, DESTINATION_RETRY)
    }

    fn t(h: i64, m: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 10, 0, 0, 0).unwrap()
            + Duration::hours(h)
            + Duration::minutes(m)
    }

    #[test]
    fn first_backup_waits_for_the_setup_then_runs_hourly() {
        let mut s = RunState::default();
        assert_eq!(nx(60, &s, t(9, 0)), Next::Idle);
        s.requested = true;
        assert_eq!(nx(60, &s, t(9, 0)), Next::RunNow);
        s.requested = false;
        s.last_success = Some(t(9, 0));
        assert_eq!(nx(60, &s, t(9, 30)), Next::WaitUntil(t(10, 0)));
        assert_eq!(nx(60, &s, t(10, 0)), Next::RunNow);
    }

    #[test]
    fn a_laptop_waking_after_hours_backs_up_once_at_once() {
        let s = RunState {
            last_success: Some(t(9, 0)),
            ..Default::default()
        };
        assert_eq!(nx(60, &s, t(17, 42)), Next::RunNow);
    }

    #[test]
    fn pause_holds_until_its_end_even_over_a_request() {
        let s = RunState {
            last_success: Some(t(1, 0)),
            requested: true,
            pause: Some(Pause {
                until: t(10, 0),
                reason: PauseReason::User,
            }),
            ..Default::default()
        };
        assert_eq!(nx(60, &s, t(9, 0)), Next::Paused(t(10, 0)));
        assert_eq!(nx(60, &s, t(10, 0)), Next::RunNow);
    }

    #[test]
    fn failures_back_off_and_missing_destinations_retry_quickly() {
        let mut s = RunState {
            last_success: Some(t(8, 0)),
            last_attempt: Some(t(9, 0)),
            failures: 3,
            ..Default::default()
        };
        assert_eq!(nx(60, &s, t(9, 1)), Next::WaitUntil(t(9, 4)));
        assert_eq!(nx(60, &s, t(9, 4)), Next::RunNow);
        s.failures = 40;
        assert_eq!(nx(60, &s, t(9, 1)), Next::WaitUntil(t(9, 30)));
        s.destination_missing = true;
        assert_eq!(
            nx(60, &s, t(9, 0)),
            Next::WaitUntil(t(9, 0) + DESTINATION_RETRY)
        );
    }

    #[test]
    fn on_demand_only_waits_for_a_request() {
        let mut s = RunState {
            last_success: Some(t(8, 0)),
            ..Default::default()
        };
        assert_eq!(nx(0, &s, t(20, 0)), Next::Idle);
        s.requested = true;
        assert_eq!(nx(0, &s, t(20, 0)), Next::RunNow);
    }

    #[test]
    fn until_tomorrow_means_eight_in_the_morning_local_time() {
        let paris = FixedOffset::east_opt(3600).unwrap();
        let now = paris.with_ymd_and_hms(2026, 3, 10, 23, 30, 0).unwrap();
        let until = tomorrow_morning(now);
        assert_eq!(
            until,
            paris
                .with_ymd_and_hms(2026, 3, 11, 8, 0, 0)
                .unwrap()
                .with_timezone(&Utc)
        );
        // Just after midnight, "tomorrow" is the next calendar day too.
        let late = paris.with_ymd_and_hms(2026, 3, 11, 0, 10, 0).unwrap();
        assert_eq!(tomorrow_morning(late).with_timezone(&paris).day0(), 11);
    }
}
