//! The users file: one user a line, `name:role:$argon2id$...`; `#` starts a comment.
//! Written by `add-user`; the console re-reads it when it changes (users_file.rs).

use std::collections::HashMap;
use std::path::Path;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use serde::{Deserialize, Serialize};

/// What a user may do: viewers see, operators also act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }
}

/// One line of the file.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// The PHC string (`$argon2id$v=19$...`).
    pub hash: String,
}

/// Why the users file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("users file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("users file {path}, line {line}: {why}")]
    Line {
        path: String,
        line: usize,
        why: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("hashing the password: {0}")]
    Hash(String),
}

/// Every user, by name.
#[derive(Debug, Clone, Default)]
pub struct Users {
    by_name: HashMap<String, User>,
}

/// A valid user name: what a line can hold unambiguously and a log can show.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'))
}

impl Users {
    /// Reads and checks the whole file; any bad line is an error naming it.
    pub fn load(path: &Path) -> Result<Users, UsersError> {
        let text = std::fs::read_to_string(path).map_err(|source| UsersError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Users::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, path: &str) -> Result<Users, UsersError> {
        let mut by_name = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| UsersError::Line {
                path: path.to_string(),
                line: i + 1,
                why: why.to_string(),
            };
            let mut parts = line.splitn(3, ':');
            let (Some(name), Some(role), Some(hash)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad("expected name:role:hash"));
            };
            if !valid_name(name) {
                return Err(bad("bad user name (letters, digits, _ - . @)"));
            }
            let role = Role::parse(role).ok_or_else(|| bad("role must be viewer or operator"))?;
            let parsed = PasswordHash::new(hash).map_err(|e| bad(&format!("bad hash: {e}")))?;
            if parsed.algorithm.as_str() != "argon2id" {
                return Err(bad("the hash must be argon2id"));
            }
            if by_name.contains_key(name) {
                return Err(bad("user listed twice"));
            }
            by_name.insert(
                name.to_string(),
                User {
                    name: name.to_string(),
                    role,
                    hash: hash.to_string(),
                },
            );
        }
        Ok(Users { by_name })
    }

    pub fn get(&self, name: &str) -> Option<&User> {
        self.by_name.get(name)
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The user if the password is right. Unknown users cost a hash check too, so timing
    /// does not tell which names exist.
    pub fn verify(&self, name: &str, password: &str) -> Option<&User> {
        let user = self.by_name.get(name);
        let hash = match user {
            Some(u) => u.hash.as_str(),
            None => dummy_hash(),
        };
        let ok = PasswordHash::new(hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        if ok {
            user
        } else {
            None
        }
    }
}

/// argon2id of a password nobody is asked for (checked for unknown user names).
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("no such user here").unwrap_or_default())
}

/// An argon2id PHC string (default parameters, random salt) for `password`.
pub fn hash_password(password: &str) -> Result<String, UsersError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| UsersError::Hash(e.to_string()))
}

/// Adds (or replaces) `name` in the file at `path`, creating it; keeps the other lines.
pub fn add_user(path: &Path, name: &str, role: Role, password: &str) -> Result<(), UsersError> {
    if !valid_name(name) {
        return Err(UsersError::Invalid(format!(
            "bad user name {name:?}: use letters, digits, _ - . @ (at most 64)"
        )));
    }
    if password.chars().count() < 8 {
        return Err(UsersError::Invalid(
            "the password must have at least 8 characters".into(),
        ));
    }
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(UsersError::Io {
                path: path.display().to_string(),
                source,
            })
        }
    };
    // Refuse to rewrite a file that does not parse: it would hide the bad line.
    Users::parse(&old, &path.display().to_string())?;
    let hash = hash_password(password)?;
    let mut out = String::new();
    for line in old.lines() {
        if line.trim().split(':').next() == Some(name) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!("{name}:{}:{hash}\n", role.as_str()));
    std::fs::write(path, out).map_err(|source| UsersError::Io {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_parse_verify() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("users");
        add_user(&f, "ann", Role::Operator, "correct horse").unwrap();
        add_user(&f, "bob", Role::Viewer, "battery staple").unwrap();
        add_user(&f, "ann", Role::Viewer, "new password").unwrap();
        let users = Users::load(&f).unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(
            users.verify("ann", "new password").unwrap().role,
            Role::Viewer
        );
        assert!(users.verify("ann", "correct horse").is_none());
        assert!(users.verify("nobody", "x").is_none());
        assert!(Users::parse("x:admin:$argon2id$", "f").is_err());
        assert!(Users::parse("justaname", "f").is_err());
    }
}
