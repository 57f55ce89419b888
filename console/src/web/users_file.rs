//! The users file, reloaded while the console runs: checked at most every few seconds
//! (on login and session validation) and read again when its modification time or size
//! changed, so `add-user` or a removed line takes effect without a restart. A file that
//! no longer parses keeps the last good users and logs why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::users::{Users, UsersError};

/// How often the console looks at the users file at most.
pub const CHECK_EVERY: Duration = Duration::from_secs(3);

/// What the file looked like when last read: (modified, length).
type Stamp = (Option<SystemTime>, u64);

struct Seen {
    users: Arc<Users>,
    stamp: Option<Stamp>,
    checked: Instant,
}

/// The current users, from a file (reloaded) or fixed.
pub struct UsersFile {
    path: Option<PathBuf>,
    every: Duration,
    seen: Mutex<Seen>,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let m = std::fs::metadata(path)?;
    Ok((m.modified().ok(), m.len()))
}

impl UsersFile {
    /// Reads `path` now (an error if it does not parse) and re-reads it when it changes,
    /// looking at most once per `every`.
    pub fn open(path: &Path, every: Duration) -> Result<UsersFile, UsersError> {
        let stamp = stamp(path).ok();
        let users = Users::load(path)?;
        Ok(UsersFile {
            path: Some(path.to_path_buf()),
            every,
            seen: Mutex::new(Seen {
                users: Arc::new(users),
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// The users now: re-read first when the check is due and the file changed.
    pub fn current(&self) -> Arc<Users> {
        let mut seen = match self.seen.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let Some(path) = &self.path else {
            return seen.users.clone();
        };
        if seen.checked.elapsed() < self.every {
            return seen.users.clone();
        }
        seen.checked = Instant::now();
        let now = match stamp(path) {
            Ok(s) => s,
            Err(e) => {
                if seen.stamp.is_some() {
                    tracing::warn!(path = %path.display(), error = %e,
                        "users file unreadable; keeping the last good users");
                    seen.stamp = None;
                }
                return seen.users.clone();
            }
        };
        if seen.stamp == Some(now) {
            return seen.users.clone();
        }
        // Remembered even when the file is bad, so a bad file is logged once per change.
        seen.stamp = Some(now);
        match Users::load(path) {
            Ok(users) => {
                tracing::info!(path = %path.display(), users = users.len(), "users file reloaded");
                seen.users = Arc::new(users);
            }
            Err(e) => {
                tracing::warn!(error = %e, "users file not reloaded; keeping the last good users");
            }
        }
        seen.users.clone()
    }
}

impl From<Users> for UsersFile {
    /// Fixed users, never reloaded.
    fn from(users: Users) -> UsersFile {
        UsersFile {
            path: None,
            every: Duration::MAX,
            seen: Mutex::new(Seen {
                users: Arc::new(users),
                stamp: None,
                checked: Instant::now(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::users::{add_user, Role};

    #[test]
    fn reloads_on_change_and_keeps_the_last_good_users() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("users");
        add_user(&f, "ann", Role::Operator, "ann password").unwrap();
        let file = UsersFile::open(&f, Duration::ZERO).unwrap();
        assert!(file.current().get("bob").is_none());
        add_user(&f, "bob", Role::Viewer, "bob password").unwrap();
        assert_eq!(file.current().get("bob").unwrap().role, Role::Viewer);
        std::fs::write(&f, "broken line\n").unwrap();
        let users = file.current();
        assert_eq!(users.len(), 2, "a broken file keeps the last good users");
        std::fs::remove_file(&f).unwrap();
        assert_eq!(file.current().len(), 2, "a missing file too");
        add_user(&f, "cid", Role::Operator, "cid password").unwrap();
        let users = file.current();
        assert!(users.get("cid").is_some() && users.get("ann").is_none());
    }

    #[test]
    fn not_looked_at_before_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("users");
        add_user(&f, "ann", Role::Operator, "ann password").unwrap();
        let file = UsersFile::open(&f, Duration::from_secs(3600)).unwrap();
        add_user(&f, "bob", Role::Viewer, "bob password").unwrap();
        assert!(file.current().get("bob").is_none());
    }
}
