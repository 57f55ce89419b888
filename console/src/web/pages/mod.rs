//! The read-only pages (each renders what the data layer returns).

pub mod job;
pub mod misc;
pub mod overview;
pub mod queue;

use maud::{html, Markup};
use serde::Deserialize;

/// `?msg=` after an action (what it did), shown once at the top of the page.
#[derive(Deserialize, Default)]
pub struct Msg {
    pub msg: Option<String>,
}

impl Msg {
    pub fn banner(&self) -> Markup {
        match &self.msg {
            Some(m) if !m.is_empty() => html! { div.banner.ok role="status" { (m) } },
            _ => html! {},
        }
    }
}
