//! Changes to the resources file made by Pylon itself (the admin API), on the reload path.
//!
//! [`Reloader::hold`] takes the reload lock, so the file watcher, SIGHUP and other admin
//! requests wait, and first brings the running version up to date with the file on disk: a
//! file edited by hand since the last load is reloaded (same rules and messages as a file
//! change), and a hand edit that does not load, or is still being written, stops the change
//! rather than being overwritten. The caller then compiles its new file text with the same
//! code as `pylon check`, writes it, and [`Hold::commit`]s the compiled table: the version,
//! metrics and log line are those of a reload. The watcher, seeing the same bytes as the
//! running version afterwards, does nothing.

use std::path::Path;
use std::sync::MutexGuard;
use std::time::Instant;

use thiserror::Error;

use super::reload::{fingerprint, Outcome, Reloader, State, Trigger};
use crate::config::Compiled;

/// Why the resources file cannot be changed now.
#[derive(Debug, Error)]
pub enum HoldError {
    /// The reload lock is poisoned (a reload panicked).
    #[error("the reload state is unusable (an earlier reload panicked)")]
    Poisoned,
    /// The file was changed behind Pylon's back and does not load: it is left alone.
    #[error(
        "the resources file was changed by hand and does not load; fix or revert it first: {0}"
    )]
    Invalid(String),
    /// The file was changed behind Pylon's back and lacks the `#END` line the running
    /// version had: it is taken as still being written.
    #[error(
        "the resources file is being edited (it does not end with #END yet); retry when it does"
    )]
    Incomplete,
    /// The file changed on disk while this change was being prepared.
    #[error("the resources file changed on disk meanwhile; retry")]
    Raced,
}

/// The reload lock, held for one change; see the module documentation.
pub struct Hold<'a> {
    reloader: &'a Reloader,
    st: MutexGuard<'a, State>,
    started: Instant,
}

impl Reloader {
    /// The resources file (absolute path).
    pub fn resources_path(&self) -> &Path {
        &self.resources_path
    }

    /// The running version and the bytes it was built from, unless the running version is
    /// `known` (then `None`, and nothing is copied). Both are read under the reload lock, so
    /// they belong together.
    pub fn running_if_newer(&self, known: u64) -> Option<(u64, Vec<u8>)> {
        let st = self.state.lock().ok()?;
        let version = self.version();
        (version != known).then(|| (version, st.text.clone()))
    }

    /// Takes the reload lock and makes sure the running version is the file's current
    /// content, reloading it first when it changed behind Pylon's back.
    ///
    /// Errors: see [`HoldError`]; in each case the running version and the file stay as they
    /// are.
    pub fn hold(&self) -> Result<Hold<'_>, HoldError> {
        let mut st = self.state.lock().map_err(|_| HoldError::Poisoned)?;
        let started = Instant::now();
        let current = std::fs::read(&self.resources_path)
            .map(|text| st.last_ok && st.last == Some(fingerprint(&text, &st.files)))
            .unwrap_or(false);
        if !current {
            match self.reload_locked(&mut st, Trigger::FileChange) {
                Outcome::Applied(_) | Outcome::Unchanged => {}
                Outcome::Incomplete => return Err(HoldError::Incomplete),
                Outcome::Failed => return Err(HoldError::Invalid(st.last_error.clone())),
            }
        }
        Ok(Hold {
            reloader: self,
            st,
            started,
        })
    }
}

impl Hold<'_> {
    /// The bytes of the resources file serving now (and on disk).
    pub fn text(&self) -> &[u8] {
        &self.st.text
    }

    /// Checks that the file on disk still holds [`Hold::text`] (a hand edit may land at any
    /// moment): call just before replacing it.
    ///
    /// Errors: [`HoldError::Raced`].
    pub fn still_current(&self) -> Result<(), HoldError> {
        match std::fs::read(&self.reloader.resources_path) {
            Ok(t) if t == self.st.text => Ok(()),
            _ => Err(HoldError::Raced),
        }
    }

    /// Serves `compiled`, built from `text`, which the caller has just written to the
    /// resources file; `how` names the change in the log line. Returns the new version.
    pub fn commit(mut self, text: Vec<u8>, compiled: Compiled, how: &str) -> u64 {
        let started = self.started;
        self.reloader
            .apply(&mut self.st, text, compiled, started, how)
    }
}
